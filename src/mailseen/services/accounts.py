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
from ..core.clientip import client_key
from ..core.compose import parse_address
from ..errors import InvalidInput, MailseenError, NotFound
from ..records import AppPasswordRecord, Role, SessionRecord, UserRecord
from ..storage import Store
from .mailboxes import require_admin

__all__ = ["Accounts", "SignInRefused", "hash_token", "normal_app_password"]

SESSION_DAYS = 14
# Throttling: after FREE failures in WINDOW each attempt waits; after LOCK it is refused.
WINDOW = timedelta(minutes=15)
FREE = 3
LOCK = 10
# One address for every account: an office behind one NAT shares it, so it allows more.
ADDRESS_FREE = 10
ADDRESS_LOCK = 30
MIN_PASSWORD = 10

Count = tuple[int, datetime | None]  # failures in the window, and the latest one's time


class SignInRefused(MailseenError):
    """Wrong email or password, or too many failures; ``retry_after`` in seconds when
    throttled (``locked``: refused until the window has passed, not just slowed down)."""

    def __init__(self, message: str, retry_after: int | None = None,
                 locked: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.locked = locked


def _refusal(judged: list[tuple[Count, int, int]], at: datetime) -> SignInRefused | None:
    """The strictest verdict over (count, free, lock) triples: locked once a count reaches
    its lock until the window has passed; past its free count, each attempt waits twice as
    long as the one before (at most a minute) after the latest failure."""
    worst: SignInRefused | None = None
    for (count, latest), free, lock in judged:
        if latest is None:
            continue
        if count >= lock:
            wait = max(1, int((latest + WINDOW - at).total_seconds()) + 1)
            verdict = SignInRefused("too many failed sign-ins: try again later", wait, True)
        elif count >= free and at < latest + timedelta(seconds=min(60, 2 ** (count - free))):
            verdict = SignInRefused("too many failed sign-ins: wait a moment",
                                    min(60, 2 ** (count - free)))
        else:
            continue
        if worst is None or (verdict.locked, verdict.retry_after or 0) > (
                worst.locked, worst.retry_after or 0):
            worst = verdict
    return worst


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


# App passwords: 24 characters from 32 letters and digits that cannot be mistaken for one
# another (no 0/o, 1/l/i), shown in groups of four: 120 random bits.
_APP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_APP_LENGTH = 24


def normal_app_password(value: str) -> str:
    """An app password as typed or pasted (groups, spaces, capitals) in its one form."""
    return "".join(value.split()).replace("-", "").lower()


def hash_app_password(value: str) -> str:
    """App passwords are random and long (120 bits), like API tokens: a fast hash is as
    safe as a slow one against whoever reads the database (there is nothing to guess), and
    it keeps each SMTP AUTH to one indexed look-up instead of an argon2 run per login."""
    return _hash_id("app:" + normal_app_password(value))


class Accounts:
    def __init__(self, store: Store, clock: Clock | None = None,
                 memory_kib: int = 65536) -> None:
        self.store = store
        self.clock = clock or store.clock  # sessions expire by the store's time
        # argon2id with the library's defaults (RFC 9106 "second recommended" profile),
        # its memory as configured.
        self.hasher = PasswordHasher(memory_cost=memory_kib)
        self._dummy_hash: str | None = None

    @property
    def _dummy(self) -> str:
        """What a sign-in for an unknown email is verified against, so that its timing is
        that of a wrong password. Made when first needed: hashing costs a sign-in's worth
        of CPU, and most processes (the CLI, pixel nodes) never sign anyone in."""
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

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
        """Check the password, slowing down and then refusing repeated failures.

        ``client`` is the real client address (through trusted proxies). Failures count under
        three keys: this account from this address, this address for any account, and this
        account from anywhere. The last one only weighs on addresses that have already failed
        for the account: someone guessing from elsewhere can lock out neither the account's
        owner nor anyone else, and a correct password from an address that has not failed
        always gets in (unless that address is itself throttled)."""
        account = email.strip().lower()[:320]
        address = client_key(client)
        pair, by_address, by_account = (f"pair:{address} {account}", f"ip:{address}",
                                        f"user:{account}")
        keys = [pair, by_address, by_account]
        since = self.clock.now() - WINDOW
        pair_count = self.store.count_login_failures(pair, since)
        judged = [(pair_count, FREE, LOCK),
                  (self.store.count_login_failures(by_address, since), ADDRESS_FREE,
                   ADDRESS_LOCK)]
        if pair_count[0]:
            judged.append((self.store.count_login_failures(by_account, since), FREE, LOCK))
        refusal = _refusal(judged, self.clock.now())
        if refusal is not None:
            if not refusal.locked:
                # Hammering during the wait counts too, so it ends in the lock-out.
                self.store.add_login_failure(keys)
            raise refusal
        found = self.store.find_user(email.strip())
        try:
            self.hasher.verify(found[1] if found else self._dummy, password)
            ok = found is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or found is None:
            self.store.add_login_failure(keys)
            raise SignInRefused("wrong email or password")
        self.store.clear_login_failures(pair)
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

    # -- managing users and API tokens (admins, or the installation) ---------------------

    def get_user(self, actor: UserRecord | None, user_id: int) -> UserRecord:
        require_admin(actor)
        return self.store.get_user(user_id)

    def find_user(self, actor: UserRecord | None, email: str) -> UserRecord:
        require_admin(actor)
        found = self.store.find_user(email.strip())
        if found is None:
            raise NotFound(f"no user {email}")
        return found[0]

    def list_users(self, actor: UserRecord | None) -> list[UserRecord]:
        require_admin(actor)
        return self.store.list_users()

    def add_user(self, actor: UserRecord | None, email: str, password: str, *,
                 name: str = "", role: Role = "member", mailbox_ids: list[int] | None = None
                 ) -> UserRecord:
        require_admin(actor)
        user = self.create_user(email, password, name=name, role=role)
        if mailbox_ids:
            self.store.set_memberships(user.id, mailbox_ids)
        return self.store.get_user(user.id)

    def update_user(self, actor: UserRecord | None, user_id: int, *, name: str | None = None,
                    role: Role | None = None, mailbox_ids: list[int] | None = None
                    ) -> UserRecord:
        """Change a user's name, role or mailboxes (what is None stays). An admin cannot
        take away their own admin role: another admin must."""
        require_admin(actor)
        if role is not None and role not in ("admin", "member"):
            raise InvalidInput("role: admin or member", field="role")
        if actor is not None and actor.id == user_id and role not in (None, "admin"):
            raise InvalidInput("role: you cannot take away your own admin role; ask another "
                               "admin to do it", field="role")
        if mailbox_ids is not None:
            self.store.set_memberships(user_id, mailbox_ids)
        if role is not None or name is not None:
            self.store.update_user(user_id, role=role, name=name)
        return self.store.get_user(user_id)

    def change_password(self, actor: UserRecord | None, user_id: int, password: str) -> None:
        require_admin(actor)
        self.set_password(user_id, password)

    def delete_user(self, actor: UserRecord | None, user_id: int) -> None:
        """Delete a user, their sessions and tokens; never one's own account."""
        require_admin(actor)
        if actor is not None and actor.id == user_id:
            raise InvalidInput("confirm: you cannot delete your own account", field="confirm")
        self.store.delete_user(user_id)

    def create_token(self, actor: UserRecord | None, name: str, user_id: int | None = None
                     ) -> str:
        """A new API token (shown once): the user's rights, or with ``user_id`` None the
        whole installation's."""
        require_admin(actor)
        value = "ms_" + secrets.token_urlsafe(32)
        self.store.add_token(name, hash_token(value), user_id=user_id)
        return value

    def list_tokens(self, actor: UserRecord | None
                    ) -> list[tuple[int, str, datetime, datetime | None]]:
        """(id, name, created, last used) of every token; never their values."""
        require_admin(actor)
        return self.store.list_tokens()

    def revoke_token(self, actor: UserRecord | None, token_id: int) -> None:
        require_admin(actor)
        self.store.delete_token(token_id)

    def token_user(self, value: str) -> tuple[bool, UserRecord | None]:
        """Whether ``value`` is a valid API token and whose rights it carries (None: the
        whole installation's)."""
        return self.store.token_user(hash_token(value))

    # -- app passwords: what a user's mail client logs in to SMTP submission with --------

    def _own_or_admin(self, actor: UserRecord | None, user_id: int) -> None:
        if actor is not None and actor.id != user_id:
            require_admin(actor)

    def create_app_password(self, actor: UserRecord | None, user_id: int, name: str
                            ) -> tuple[AppPasswordRecord, str]:
        """A new app password for ``user_id`` (their own, or any user's for an admin or the
        installation) and its value, which is shown this once."""
        self._own_or_admin(actor, user_id)
        name = " ".join(name.split())
        if not name:
            raise InvalidInput("name: say which client or device it is for, e.g. "
                               "\"Thunderbird on my laptop\"", field="name")
        if len(name) > 200:
            raise InvalidInput("name: at most 200 characters", field="name")
        raw = "".join(secrets.choice(_APP_ALPHABET) for _ in range(_APP_LENGTH))
        value = "-".join(raw[i:i + 4] for i in range(0, _APP_LENGTH, 4))
        record = self.store.add_app_password(user_id, name, hash_app_password(value))
        return record, value

    def list_app_passwords(self, actor: UserRecord | None, user_id: int
                           ) -> list[AppPasswordRecord]:
        self._own_or_admin(actor, user_id)
        return self.store.list_app_passwords(user_id)

    def revoke_app_password(self, actor: UserRecord | None, user_id: int,
                            password_id: int) -> None:
        self._own_or_admin(actor, user_id)
        self.store.delete_app_password(user_id, password_id)

    def app_password_login(self, email: str, password: str, client: str) -> UserRecord:
        """The user whose app password ``password`` is, when ``email`` is theirs; failures
        are throttled like sign-ins (under keys of their own, so a mail client retrying a
        revoked password cannot lock its owner out of the web app)."""
        account = email.strip().lower()[:320]
        address = client_key(client)
        pair, by_address = f"app:pair:{address} {account}", f"app:ip:{address}"
        since = self.clock.now() - WINDOW
        pair_count = self.store.count_login_failures(pair, since)
        refusal = _refusal([(pair_count, FREE, LOCK),
                            (self.store.count_login_failures(by_address, since),
                             ADDRESS_FREE, ADDRESS_LOCK)], self.clock.now())
        if refusal is not None:
            if not refusal.locked:
                self.store.add_login_failure([pair, by_address])
            raise refusal
        user = self.store.app_password_user(hash_app_password(password))
        if user is None or user.email.lower() != account:
            self.store.add_login_failure([pair, by_address])
            raise SignInRefused("wrong user name or app password")
        if pair_count[0]:
            self.store.clear_login_failures(pair)
        return user
