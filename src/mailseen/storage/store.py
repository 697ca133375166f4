"""Every database operation mailseen performs, as methods over plain records.

The store is split by noun into mixins (mailboxes, messages, queue, views, users, displays)
that share one transaction helper; adapters and services see only :class:`Store`.
"""

from __future__ import annotations

from .base import Cipher, now
from .displays import DisplayStore
from .mailboxes import MailboxStore
from .messages import Ingested, MessageStore, Rendered, referenced_ids
from .queue import Claim, QueueStore
from .reports import ReportStore
from .users import UserStore
from .views import Judge, ViewStore

__all__ = ["Cipher", "Claim", "Ingested", "Judge", "Rendered", "Store", "now",
           "referenced_ids"]


class Store(MailboxStore, MessageStore, QueueStore, ViewStore, UserStore, ReportStore,
            DisplayStore):
    pass
