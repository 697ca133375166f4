"""Receiving mail: an IMAP poller, an SMTP receiver, and SMTP submission for the team's
own mail clients. Both hand every message to the one
ingest path, :meth:`mailseen.services.inbound.Ingestor.ingest`. Only this package knows the
IMAP and SMTP server libraries."""

from .imap import ImapError, ImapPoller, SentFiler
from .smtpd import SmtpReceiver
from .submission import SubmissionServer

__all__ = ["ImapError", "ImapPoller", "SentFiler", "SmtpReceiver", "SubmissionServer"]
