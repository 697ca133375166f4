"""Every database operation mailseen performs, as methods over plain records.

The store is split by noun into mixins (mailboxes, messages, queue, views, users, displays, live,
privacy) that share one transaction helper; adapters and services see only :class:`Store`.
"""

from __future__ import annotations

from .base import Cipher
from .clicks import ClickStore
from .displays import DisplayStore
from .live import LiveStore
from .mailboxes import MailboxStore
from .messages import MessageStore, referenced_ids
from .personal import PersonalStore
from .privacy import PrivacyStore
from .queue import QueueStore
from .reminders import ReminderStore
from .reports import ReportStore
from .users import UserStore
from .views import ViewStore
from .webhooks import WebhookStore

__all__ = ["Cipher", "Store", "referenced_ids"]


class Store(MailboxStore, MessageStore, QueueStore, ViewStore, UserStore, ReportStore,
            DisplayStore, LiveStore, PrivacyStore, PersonalStore, ClickStore, WebhookStore,
            ReminderStore):
    pass
