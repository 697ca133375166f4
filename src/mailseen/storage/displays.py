"""Messages made ready to show, stored so that sanitising happens once (see web/display)."""

from __future__ import annotations

import json
from dataclasses import asdict

from sqlalchemy.exc import IntegrityError

from ..core.mailbody import Display, MailAttachment
from .base import StoreBase
from .models import MessageDisplay


class DisplayStore(StoreBase):
    def get_display(self, message_id: int) -> Display | None:
        with self._tx() as s:
            row = s.get(MessageDisplay, message_id)
            if row is None:
                return None
            attachments = [MailAttachment(**a) for a in json.loads(row.attachments_json)]
            return Display(row.version, row.html, row.html_images, row.text,
                           row.blocked_images, attachments, row.note)

    def put_display(self, message_id: int, display: Display) -> None:
        """Store (or replace) the display of ``message_id``. Two makers racing store the same
        thing; the one that comes second is a no-op."""
        row = MessageDisplay(
            message_id=message_id, version=display.version, html=display.html,
            html_images=display.html_images, text=display.text,
            blocked_images=display.blocked_images,
            attachments_json=json.dumps([asdict(a) for a in display.attachments]),
            note=display.note)
        try:
            with self._tx() as s:
                s.merge(row)
        except IntegrityError:
            pass
