"""Pixel tokens: short, URL-safe, HMAC-signed references to one copy of a message.

Layout before base64url: version (1 byte), a value (8 bytes), 2 bytes, then the first 12 bytes
of HMAC-SHA256 over those 11 bytes. 23 bytes encode to 31 characters of ``A-Za-z0-9-_``. A
96-bit tag makes a forged token as likely as guessing a random one, and a token is checked
without a database read, so pixel nodes need only the secret key.

Version 2 (what mailseen makes): the value is a copy's key, a random number drawn when the copy
is queued, so a token says nothing of the message's row id or how many messages there are.
Version 1 (tokens in mail sent before copies existed): the value is the message id and the two
bytes a recipient index, always 0 ("the message as a whole"). Both are checked alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

__all__ = ["CLICK_URL_LIMIT", "COPY_KEY_LIMIT", "TOKEN_LENGTH", "ClickRef", "ClickSigner",
           "TokenRef", "TokenSigner", "new_copy_key"]

_VERSION = 1
_PAYLOAD = struct.Struct(">BQH")
_MAC_BYTES = 12
_KNOWN_MAX = 10_000
TOKEN_LENGTH = 31  # len(base64url(11 + 12 bytes)) without padding
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


_COPY_VERSION = 2
COPY_KEY_LIMIT = 2**63  # keys fit a signed 64-bit column


@dataclass(frozen=True, slots=True)
class TokenRef:
    """What a token names: a copy's key (``copy_key``), or, in a version 1 token, a
    message id and recipient index."""

    message_id: int = 0
    recipient: int = 0
    copy_key: int = 0


class TokenSigner:
    """Makes and checks tokens with a key derived from the instance secret."""

    __slots__ = ("_inner", "_key", "_known", "_outer")

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
        # Genuine tokens checked lately: a message's pixel is fetched again and again (its
        # reader, proxies, scanners), and a hit on one skips the HMAC. Only tokens that
        # verified are kept, so forged ones cannot crowd out real ones for long.
        self._known: dict[str, TokenRef] = {}

    def _mac(self, payload: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_MAC_BYTES]

    def make(self, ref: TokenRef) -> str:
        if ref.copy_key:
            if not 0 < ref.copy_key < COPY_KEY_LIMIT:
                raise ValueError("copy key out of range")
            payload = _PAYLOAD.pack(_COPY_VERSION, ref.copy_key, 0)
        elif not (0 < ref.message_id < 2**64 and 0 <= ref.recipient < 2**16):
            raise ValueError("message id or recipient index out of range")
        else:
            payload = _PAYLOAD.pack(_VERSION, ref.message_id, ref.recipient)
        raw = payload + self._mac(payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, token: str) -> TokenRef | None:
        """Return the reference a genuine token names, or None for anything else."""
        known = self._known.get(token)
        if known is not None:
            return known
        ref = self._check(token)
        if ref is not None:
            if len(self._known) >= _KNOWN_MAX:
                self._known.clear()
            self._known[token] = ref
        return ref

    def _check(self, token: str) -> TokenRef | None:
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
        version, value, recipient = _PAYLOAD.unpack(payload)
        if version == _COPY_VERSION and 0 < value < COPY_KEY_LIMIT and recipient == 0:
            return TokenRef(copy_key=value)
        if version != _VERSION or value == 0:
            return None
        return TokenRef(value, recipient)


def new_copy_key() -> int:
    """A random key for a new copy's token (63 bits: a collision among a billion copies is
    about one chance in twenty billion, and storage refuses one anyway)."""
    return secrets.randbelow(COPY_KEY_LIMIT - 1) + 1


# -- click tokens ---------------------------------------------------------------------------
# /c/<token>: a copy's key, the link's place in the message, and the URL it leads to, signed
# together. The URL is inside the token, so the redirect needs no database read and can go
# nowhere but where the signed bytes say (no open redirect): a token whose URL was changed
# fails the HMAC. Layout before base64url: version 3 (1 byte), the copy key (8), the link's
# index (2), the first 12 bytes of HMAC-SHA256 over the rest, then the URL in UTF-8.
_CLICK_VERSION = 3
_CLICK_HEAD = struct.Struct(">BQH")
CLICK_URL_LIMIT = 2048  # longer links are left as they are (and some browsers cut them)


@dataclass(frozen=True, slots=True)
class ClickRef:
    """What a click token names: the copy (by its key), which link, and where it leads."""

    copy_key: int
    link: int
    url: str


class ClickSigner:
    """Makes and checks click tokens with a key of their own, derived from the instance
    secret (a pixel token can never pass for a click token, nor the other way round)."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the secret key must be at least 16 bytes")
        self._key = hmac.new(secret, b"mailseen click token v1", hashlib.sha256).digest()

    def _mac(self, head: bytes, url: bytes) -> bytes:
        return hmac.new(self._key, head + url, hashlib.sha256).digest()[:_MAC_BYTES]

    def make(self, ref: ClickRef) -> str:
        if not 0 < ref.copy_key < COPY_KEY_LIMIT or not 0 <= ref.link < 2**16:
            raise ValueError("copy key or link index out of range")
        url = ref.url.encode()
        if len(url) > CLICK_URL_LIMIT:
            raise ValueError("URL too long for a click token")
        head = _CLICK_HEAD.pack(_CLICK_VERSION, ref.copy_key, ref.link)
        raw = head + self._mac(head, url) + url
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, token: str) -> ClickRef | None:
        """The reference a genuine token names, or None for anything else."""
        fixed = _CLICK_HEAD.size + _MAC_BYTES
        if not token.isascii() or len(token) > (fixed + CLICK_URL_LIMIT) * 4 // 3 + 4:
            return None
        text = token.encode("ascii")
        try:
            raw = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
        # Canonical only: re-encoding must give the same text.
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != text or len(raw) <= fixed:
            return None
        head, mac, url = raw[: _CLICK_HEAD.size], raw[_CLICK_HEAD.size : fixed], raw[fixed:]
        if not hmac.compare_digest(mac, self._mac(head, url)):
            return None
        version, key, link = _CLICK_HEAD.unpack(head)
        if version != _CLICK_VERSION or not 0 < key < COPY_KEY_LIMIT:
            return None
        try:
            return ClickRef(key, link, url.decode())
        except UnicodeDecodeError:
            return None
