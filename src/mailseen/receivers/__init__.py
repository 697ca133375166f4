"""Receiving mail: an IMAP poller and an SMTP receiver. Both hand every message to the one
ingest path, :meth:`mailseen.services.inbound.Ingestor.ingest`. Only this package knows the
IMAP and SMTP server libraries."""

from .imap import ImapError, ImapPoller
from .smtpd import SmtpReceiver

__all__ = ["ImapError", "ImapPoller", "SmtpReceiver"]
