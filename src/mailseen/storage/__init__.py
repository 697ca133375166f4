"""Storage: the only package that knows SQLAlchemy. Adapters get plain records back."""

from .db import Database
from .records import (
    MailboxIn,
    MailboxRecord,
    MessageRecord,
    NewMessage,
    ViewIn,
    ViewRecord,
)
from .store import Store

__all__ = [
    "Database",
    "MailboxIn",
    "MailboxRecord",
    "MessageRecord",
    "NewMessage",
    "Store",
    "ViewIn",
    "ViewRecord",
]
