"""The settings audit log: who changed which tracking or privacy setting, when, from what to
what. Every service that changes such a setting writes here; only admins read it."""

from __future__ import annotations

from collections.abc import Mapping

from ..records import UserRecord
from ..storage import Store

__all__ = ["INSTALLATION", "log_changes", "who"]

# Who acts when no user does: the command line, or an installation-wide API token.
INSTALLATION = "installation (command line or admin API token)"


def who(actor: UserRecord | None) -> str:
    if actor is None:
        return INSTALLATION
    return f"{actor.name} <{actor.email}>" if actor.name else actor.email


def shown(value: object) -> str:
    """A setting's value as the log shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "" if value is None else str(value)


def log_changes(store: Store, actor: UserRecord | None, scope: str,
                changes: Mapping[str, tuple[object, object]]) -> None:
    """Append one entry per setting whose value changed: {setting: (old, new)}."""
    store.log_setting_changes(
        [(scope, name, shown(old), shown(new)) for name, (old, new) in changes.items()
         if shown(old) != shown(new)], who(actor), actor.id if actor else None)

