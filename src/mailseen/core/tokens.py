"""Pixel tokens: short, URL-safe, HMAC-signed references to a message and one of its recipients.

Layout before base64url: version (1 byte), message id (8 bytes), recipient index (2 bytes),
then the first 12 bytes of HMAC-SHA256 over those 11 bytes. 23 bytes encode to 31 characters of
``A-Za-z0-9-_``. A 96-bit tag makes a forged token as likely as guessing a random one, and a
token is checked without a database read, so pixel nodes need only the secret key.

Recipient index 0 means "the message as a whole"; indexes 1.. leave room for a token per
recipient without changing the format.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass

__all__ = ["TOKEN_LENGTH", "TokenRef", "TokenSigner"]

_VERSION = 1
_PAYLOAD = struct.Struct(">BQH")
_MAC_BYTES = 12
TOKEN_LENGTH = 31  # len(base64url(11 + 12 bytes)) without padding
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


@dataclass(frozen=True, slots=True)
class TokenRef:
    message_id: int
    recipient: int = 0


class TokenSigner:
    """Makes and checks tokens with a key derived from the instance secret."""

    __slots__ = ("_inner", "_key", "_outer")

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the secret key must be at least 16 bytes")
        # Derive a purpose-bound key so the instance secret can serve other uses safely.
        self._key = hmac.new(secret, b"mailseen pixel token v1", hashlib.sha256).digest()
        # HMAC-SHA256 (RFC 2104) with its keyed inner and outer states computed once: the
        # pixel checks a token on every hit, and this halves the cost of hmac.new per call.
        block = self._key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def _mac(self, payload: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_MAC_BYTES]

    def make(self, ref: TokenRef) -> str:
        if not (0 < ref.message_id < 2**64 and 0 <= ref.recipient < 2**16):
            raise ValueError("message id or recipient index out of range")
        payload = _PAYLOAD.pack(_VERSION, ref.message_id, ref.recipient)
        raw = payload + self._mac(payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, token: str) -> TokenRef | None:
        """Return the reference a genuine token names, or None for anything else."""
        # binascii rather than base64.urlsafe_b64*: the same codec without five Python calls
        # around it, on the path every pixel hit takes.
        if len(token) != TOKEN_LENGTH or not token.isascii():
            return None
        text = token.encode("ascii")
        try:
            raw = binascii.a2b_base64(text.translate(_FROM_URLSAFE) + b"=")
        except binascii.Error:
            return None
        # A token is canonical: re-encoding must give the same text. This also refuses
        # whatever the lenient decoder skipped or read the same way ("+" for "-", stray bytes).
        if binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE)[:-1] != text:
            return None
        if len(raw) != _PAYLOAD.size + _MAC_BYTES:
            return None
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        version, message_id, recipient = _PAYLOAD.unpack(payload)
        if version != _VERSION or message_id == 0:
            return None
        return TokenRef(message_id, recipient)
