"""Users: passwords (argon2id), sign-in with throttling, browser sessions, and who may see
which mailbox."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..clock import Clock
from ..core.compose import parse_address
from ..errors import InvalidInput, MailseenError, NotFound
from ..storage import Store
from ..storage.records import Role, SessionRecord, UserRecord

__all__ = ["Accounts", "SignInRefused", "can_see_mailbox", "hash_token"]

SESSION_DAYS = 14
# Throttling: after FREE failures in WINDOW each attempt waits; after LOCK it is refused.
WINDOW = timedelta(minutes=15)
FREE = 3
LOCK = 10
MIN_PASSWORD = 10


class SignInRefused(MailseenError):
    """Wrong email or password, or too many failures; ``retry_after`` in seconds if locked."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class NewSession:
    cookie_value: str
    csrf_token: str
    expires_at: datetime


def _hash_id(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def hash_token(token: str) -> str:
    """API tokens and session ids are random and long: a plain SHA-256 is enough to keep
    the stored value useless to whoever reads the database."""
    return _hash_id(token)


def can_see_mailbox(user: UserRecord | None, mailbox_id: int) -> bool:
    """None stands for an installation-wide admin token."""
    return user is None or user.is_admin or mailbox_id in user.mailbox_ids


class Accounts:
    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or store.clock  # sessions expire by the store's time
        # argon2id with the library's defaults (RFC 9106 "second recommended" profile).
        self.hasher = PasswordHasher()
        # Verifying against this when the email is unknown keeps timing alike.
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))

    def _check_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise InvalidInput(f"password: at least {MIN_PASSWORD} characters",
                               field="password")

    def create_user(self, email: str, password: str, *, name: str = "",
                    role: Role = "member", first_run: bool = False) -> UserRecord:
        address = parse_address(email, "email")
        self._check_password(password)
        if role not in ("admin", "member"):
            raise InvalidInput("role: admin or member", field="role")
        return self.store.add_user(address, name.strip(), self.hasher.hash(password), role,
                                   only_if_none=first_run)

    def set_password(self, user_id: int, password: str) -> None:
        self._check_password(password)
        self.store.update_user(user_id, password_hash=self.hasher.hash(password))

    def needs_setup(self) -> bool:
        return self.store.count_users() == 0

    def sign_in(self, email: str, password: str, client: str) -> tuple[UserRecord, NewSession]:
        """Check the password, slowing down and then refusing repeated failures for the
        account and for the client address."""
        keys = [f"user:{email.strip().lower()}", f"ip:{client}"]
        since = self.clock.now() - WINDOW
        worst = 0
        latest = None
        for key in keys:
            count, at = self.store.count_login_failures(key, since)
            if count > worst:
                worst, latest = count, at
        if worst >= LOCK and latest is not None:
            wait = int((latest + WINDOW - self.clock.now()).total_seconds()) + 1
            raise SignInRefused("too many failed sign-ins: try again later", max(1, wait))
        if worst >= FREE and latest is not None:
            # Each further failure doubles the wait before the next attempt is judged.
            delay = timedelta(seconds=min(60, 2 ** (worst - FREE)))
            if self.clock.now() < latest + delay:
                # Hammering during the wait counts too, so it ends in the lock-out.
                self.store.add_login_failure(keys)
                raise SignInRefused("too many failed sign-ins: wait a moment",
                                    int(delay.total_seconds()) or 1)
        found = self.store.find_user(email.strip())
        try:
            self.hasher.verify(found[1] if found else self._dummy, password)
            ok = found is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or found is None:
            self.store.add_login_failure(keys)
            raise SignInRefused("wrong email or password")
        self.store.clear_login_failures(keys[0])
        return found[0], self.start_session(found[0])

    def start_session(self, user: UserRecord) -> NewSession:
        value = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = self.clock.now() + timedelta(days=SESSION_DAYS)
        self.store.add_session(_hash_id(value), user.id, csrf, expires)
        return NewSession(value, csrf, expires)

    def session(self, cookie_value: str | None) -> SessionRecord | None:
        if not cookie_value or len(cookie_value) > 200:
            return None
        return self.store.get_session(_hash_id(cookie_value))

    def sign_out(self, cookie_value: str) -> None:
        self.store.delete_session(_hash_id(cookie_value))

    def mailbox_ids(self, user: UserRecord | None) -> list[int]:
        boxes = self.store.list_mailboxes()
        return [b.id for b in boxes if can_see_mailbox(user, b.id)]

    def require_mailbox(self, user: UserRecord | None, mailbox_id: int) -> None:
        """Raise NotFound (not Forbidden: no hint that it exists) unless visible."""
        if not can_see_mailbox(user, mailbox_id):
            raise NotFound(f"no mailbox with id {mailbox_id}")
