"""Storage: the only package that knows SQLAlchemy. Adapters get plain records back."""

from .db import Database
from .records import (
    ConversationRecord,
    ImapState,
    Judged,
    MailboxIn,
    MailboxRecord,
    MessageRecord,
    NewMessage,
    ViewIn,
    ViewRecord,
)
from .store import Store

__all__ = [
    "ConversationRecord",
    "Database",
    "ImapState",
    "Judged",
    "MailboxIn",
    "MailboxRecord",
    "MessageRecord",
    "NewMessage",
    "Store",
    "ViewIn",
    "ViewRecord",
]
