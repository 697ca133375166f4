"""The small error hierarchy that every layer raises and every edge turns into a message."""

from __future__ import annotations


class MailseenError(Exception):
    """Base of every error mailseen raises on purpose. ``str(err)`` is a one-line message."""


class InvalidInput(MailseenError, ValueError):
    """Input that cannot be accepted; ``field`` names the offending field when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotAMessage(InvalidInput):
    """Bytes that are not an RFC 5322 message at all (empty, binary garbage)."""


class NotFound(MailseenError, LookupError):
    """A mailbox, message or token that does not exist."""


class Conflict(MailseenError):
    """The request clashes with what is stored (a duplicate address, say)."""


class StorageUnavailable(MailseenError, ConnectionError):
    """The database cannot be reached, is locked or is full."""


class StorageFull(StorageUnavailable):
    """The database has no disk space left for a write (reads still work)."""


class DeliveryError(MailseenError):
    """A transport could not hand a message over.

    ``permanent`` is True when retrying cannot help (an SMTP 5xx reply). ``relay`` is True
    when the trouble is the relay's rather than this message's (it cannot be reached, or
    it closed the session with 421): every message for it would meet it.
    """

    def __init__(self, message: str, *, permanent: bool, relay: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.relay = relay
