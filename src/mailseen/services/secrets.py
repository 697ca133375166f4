"""Encryption of stored credentials (SMTP/IMAP passwords) with the instance key."""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken

from ..errors import MailseenError

__all__ = ["SecretBox"]


class SecretBox:
    """Fernet (AES-128-CBC + HMAC-SHA256) with a key derived from the instance secret."""

    def __init__(self, secret: bytes) -> None:
        key = hmac.new(secret, b"mailseen credential encryption v1", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            raise MailseenError(
                "a stored password cannot be decrypted: was the secret key changed?") from exc
