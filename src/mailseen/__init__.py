"""mailseen: self-hosted email open tracking for team mailboxes."""

__version__ = "0.1.0"
