"""The one send pipeline: every outbound message, composed or handed over whole, goes
through :meth:`Sender.submit`, which decides tracking, tags and queues it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core.compose import Draft, build_message, parse_address, prepare_raw
from ..core.consent import AGGREGATE_REASON
from ..core.inject import LinkEdits, tag_message
from ..core.links import Link, link_edits, list_unsubscribe_of
from ..core.mailbody import TooComplex, body_words, parse_message
from ..core.pixel import OwnUrl, click_url, own_url, pixel_tag, pixel_url, refusal_url
from ..core.reach import reach_warning
from ..core.refusal import refusal_line
from ..core.splice import splice_of, spliced, tag_key
from ..core.tokens import (
    CLICK_URL_LIMIT,
    TOKEN_LENGTH,
    ClickRef,
    ClickSigner,
    TokenRef,
    TokenSigner,
    new_copy_key,
)
from ..core.tracking import not_trackable
from ..errors import InvalidInput
from ..records import (
    CopyRecord,
    MailboxRecord,
    MessageRecord,
    NewCopy,
    NewMessage,
    Splice,
    UserRecord,
)
from ..storage import Store
from .consents import Consents
from .mailboxes import Mailboxes
from .reminders import RemindChoice, Reminders

__all__ = ["TURNED_OFF", "Sender"]


class Sender:
    def __init__(self, store: Store, mailboxes: Mailboxes, signer: TokenSigner, base_url: str,
                 on_queued: Callable[[], None] | None = None,
                 consents: Consents | None = None,
                 reminders: Reminders | None = None,
                 click_signer: ClickSigner | None = None) -> None:
        self.store = store
        # Makes the click redirect's tokens; without one, links are never rewritten.
        self.click_signer = click_signer
        self.mailboxes = mailboxes
        self.consents = consents or Consents(store, mailboxes, signer, base_url)
        self.reminders = reminders or Reminders(store)
        self.signer = signer
        self.base_url = base_url
        self.on_queued = on_queued
        self._templates: dict[tuple[bytes, tuple[str, str] | None], tuple[bytes, ...] | None] = {}
        self._tag_keys: dict[tuple[str, str] | None, str] = {}

    def own_url(self, url: str) -> OwnUrl | None:
        """Whether fetching ``url`` reaches one of our /t/ (pixel) or /c/ (click) paths (see
        :func:`mailseen.core.pixel.own_url`)."""
        return own_url(url, self.base_url, self._genuine)

    def is_own_pixel(self, url: str) -> bool:
        """An image URL is ours when fetching it reaches our /t/ (or /c/) paths: anything
        under the public base URL's, and elsewhere (the public URL may have changed since)
        one with a genuine token."""
        return own_url(url, self.base_url, self._genuine) is not None

    def _genuine(self, token: str) -> bool:
        if self.signer.check(token) is not None:
            return True
        return self.click_signer is not None and self.click_signer.check(token) is not None

    def send_draft(self, mailbox: MailboxRecord, draft: Draft, source: str = "api", *,
                   actor: UserRecord | None = None, track: bool = True,
                   remind: RemindChoice | None = None) -> MessageRecord:
        draft.from_addr = draft.from_addr or mailbox.address
        draft.from_name = draft.from_name or mailbox.display_name
        raw = build_message(draft, _domain(mailbox.address))
        # The envelope is the recipients the user chose, never what a parser finds in the
        # message we built: a value that slipped a field past the checks cannot add one.
        chosen = {f: [parse_address(a, f) for a in values]
                  for f, values in (("to", draft.to), ("cc", draft.cc), ("bcc", draft.bcc))}
        envelope = list(dict.fromkeys([*chosen["to"], *chosen["cc"], *chosen["bcc"]]))
        return self.submit(mailbox, raw, bcc=chosen["bcc"], envelope_to=envelope,
                           source=source, actor=actor, track=track, remind=remind)

    def submit(self, mailbox: MailboxRecord, raw: bytes, *, bcc: list[str] | None = None,
               envelope_to: list[str] | None = None, source: str = "api", queue: bool = True,
               actor: UserRecord | None = None, track: bool = True,
               remind: RemindChoice | None = None) -> MessageRecord:
        """Store ``raw`` as a message of ``mailbox``, tracked as the settings say, and queue
        it for delivery (or, with ``queue=False``, record it as sent by other software: see
        :meth:`tag`).

        A tracked message leaves as one copy per envelope recipient, each with a pixel of
        its own, so that a view names the person whose copy it was; an untracked one leaves
        once for all. The message is stored as written (earlier pixels of ours taken out);
        each copy gets its pixel as it is handed over (:meth:`copy_bytes`).

        ``actor`` is who sends it (None: the installation, through ``source``); ``track``
        False turns tracking off for this one message (it never turns it on where the
        mailbox or global setting has it off). ``remind``: the follow-up reminders asked
        for (None: the mailbox's defaults; services/reminders.py)."""
        deadlines = self.reminders.deadlines(mailbox, remind) if queue else []
        raw, facts = prepare_raw(raw, _domain(mailbox.address))
        all_bcc = list(dict.fromkeys([*facts.bcc, *(bcc or [])]))
        recipients = envelope_to or list(dict.fromkeys([*facts.to, *facts.cc, *all_bcc]))
        if queue and not recipients:
            raise InvalidInput("to: the message has no recipients", field="to")
        decision = self.mailboxes.decision(mailbox)
        # Our earlier pixels, quoted in a reply, come out whether or not this one is
        # tracked: displaying it would count as a view of the earlier message.
        cleaned = tag_message(raw, "", self.is_own_pixel)
        body = cleaned.data if cleaned.pixels_removed else raw
        tracked, reason = False, decision.reason
        copies = [NewCopy(0, None, None)]
        splice = None
        if decision.enabled and not track:
            reason = TURNED_OFF
        elif decision.enabled:
            # Whether a pixel can go in depends on the message's structure alone: try one,
            # with the stand-in each copy's token takes the place of, as a personal copy
            # has it; what that changes is kept, and copies are made of it by splicing.
            line = _line(mailbox)
            probe = tag_message(body, self._tag(_STAND_IN, line), _none_ours)
            if probe.trackable and _pieces(body, probe.data, probe.parts_tagged, line):
                splice = splice_of(body, probe.data, self._tag_key(line))
            if not probe.trackable:
                reason = not_trackable(probe.reason or "unknown")
            elif not queue:  # mail other software sends gets its copies from :meth:`tag`
                tracked, copies = True, []
            else:
                tracked, reason, copies = self.plan(mailbox, recipients, decision.reason)
            # Still tracked (tests send to loopback), but the reason says it is in vain.
            if tracked and (warning := reach_warning(self.base_url, recipients)):
                reason = f"{reason}; {warning}"
        new = NewMessage(
            mailbox_id=mailbox.id, message_id=facts.message_id, subject=facts.subject,
            from_addr=facts.from_addr or mailbox.address, to=facts.to, cc=facts.cc, bcc=all_bcc,
            envelope_to=recipients, in_reply_to=facts.in_reply_to, references=facts.references,
            source=source, sent_by=_sender_name(actor, source),
            sent_by_user_id=actor.id if actor else None, words=_words(body),
        )
        clicks = (tracked and self.click_signer is not None
                  and self.mailboxes.click_decision(mailbox).enabled)
        # Copies with click tracking are tagged one by one (each one's links are its own).
        record = self.store.add_message(new, body, copies, tracked=tracked, reason=reason,
                                        queued=queue, clicks=clicks,
                                        splice=splice if tracked and not clicks else None)
        self.reminders.schedule(record, actor, deadlines)
        if queue and self.on_queued is not None:
            self.on_queued()
        return record

    def plan(self, mailbox: MailboxRecord, recipients: Sequence[str], why: str
             ) -> tuple[bool, str, list[NewCopy]]:
        """The copies a tracked message from ``mailbox`` leaves as, under the privacy policy:
        (whether any copy has a pixel, the message's tracking reason, the copies). ``why``
        is why tracking is on ("enabled globally"). Each recipient with a personal pixel
        gets a copy of their own; one who may not be tracked gets a copy without a pixel;
        under ``aggregate`` the others share one copy whose pixel names nobody."""
        choice, decided = self.consents.decide(mailbox, recipients)
        copies: list[NewCopy] = []
        shared = [d.address for d in decided if d.pixel == "aggregate"]
        if shared:
            copies.append(NewCopy(0, None, new_copy_key(), pixel="aggregate",
                                  reason=AGGREGATE_REASON,
                                  envelope=None if len(shared) == len(decided)
                                  else tuple(shared)))
        for n, d in enumerate(decided, 1):
            if d.pixel == "personal":
                copies.append(NewCopy(n, d.address, new_copy_key(), pixel="personal",
                                      reason=d.reason))
            elif d.pixel == "none":
                copies.append(NewCopy(n, d.address, None, pixel="none", reason=d.reason))
        left_out = [d.reason for d in decided if d.pixel == "none"]
        if len(left_out) == len(decided):  # nobody may be tracked: one untracked copy
            return False, "; ".join(dict.fromkeys(left_out)), [NewCopy(0, None, None)]
        parts = [why]
        if choice.policy != "everyone" or left_out:
            parts.append(choice.reason)
        parts.extend(dict.fromkeys(left_out))
        return True, "; ".join(parts), copies

    def tag(self, mailbox: MailboxRecord, raw: bytes, recipient: str | None = None
            ) -> tuple[MessageRecord, bytes]:
        """The ``tag`` filter's registration: ``raw`` recorded as sent by other software,
        and the bytes to send. Without ``recipient`` every recipient gets the same copy with
        one shared pixel (its views cannot name a person); with it, the output is that
        recipient's own copy. The same message (Message-ID) tagged again is the same
        message: only a copy for a new recipient is added."""
        _, facts = prepare_raw(raw, _domain(mailbox.address))
        found = self.store.find_outbound(mailbox.id, facts.message_id)
        if found is None or found.source != "tag":
            found = self.submit(mailbox, raw, source="tag", queue=False)
        body = self.store.get_raw(found.id)
        if not found.tracked:
            return found, body
        if recipient is None:
            copy = self.store.add_copy(found.id, None, new_copy_key())
        else:
            recipient = parse_address(recipient, "recipient")
            _, (decided,) = self.consents.decide(mailbox, [recipient])
            # A recipient who may not be followed gets the message without a pixel; under
            # ``aggregate`` each tagged copy is still one recipient's, so none either.
            keep = decided.pixel == "personal"
            copy = self.store.add_copy(found.id, recipient, new_copy_key() if keep else None,
                                       "personal" if keep else "none", decided.reason)
        return self.store.get_message(found.id), self.copy_bytes(
            body, copy, mailbox, clicks=found.clicks_tracked)

    def copy_bytes(self, raw: bytes, copy: CopyRecord, mailbox: MailboxRecord | None = None,
                   clicks: bool = False, splice: Splice | None = None) -> bytes:
        """A copy as its recipient gets it: the stored message, with the copy's pixel when
        it has one, and the mailbox's refusal line when it shows one and the pixel is the
        recipient's own. With ``clicks`` (the message's ``clicks_tracked``), a personal
        copy's links lead through the click redirect. The same bytes every time (a retry
        sends what the first try did): nothing here depends on the time or chance.

        Without click tracking the message is tagged once with a stand-in token of a real
        one's length and alphabet, and each copy is that with its own token put in its
        place: its copies (a batch holds them together) do not parse the message again.
        ``splice``, what that tagging changed as kept when the message was queued, spares
        even the first copy the parsing, when made with the tag the copy would get now.
        Where the stand-in cannot be found as written (an HTML body in base64), and where
        each copy's links are its own, each copy is tagged."""
        if copy.token_key is None:
            return raw
        line = _line(mailbox) if mailbox is not None and copy.personal else None
        token = self.signer.make(TokenRef(copy_key=copy.token_key))
        if clicks and copy.personal and self.click_signer is not None:
            links = self._link_edits(raw, copy.token_key)
            result = tag_message(raw, self._tag(token, line), _none_ours, links)
            return result.data if result.trackable else raw
        pieces = self._template(raw, line, splice)
        if pieces is None:
            result = tag_message(raw, self._tag(token, line), _none_ours)
            return result.data if result.trackable else raw
        return token.encode().join(pieces)

    def _tag(self, token: str, line: tuple[str, str] | None) -> str:
        """What goes into a copy's HTML: its pixel, after the refusal line when there is
        one (``line``: the mailbox's language and sentence)."""
        tag = pixel_tag(pixel_url(self.base_url, token))
        if line is not None:
            tag = refusal_line(refusal_url(self.base_url, token), *line) + tag
        return tag

    def _tag_key(self, line: tuple[str, str] | None) -> str:
        """The name of the stand-in tag of copies with refusal line ``line``."""
        key = self._tag_keys.get(line)
        if key is None:
            key = self._tag_keys[line] = tag_key(self._tag(_STAND_IN, line))
        return key

    def _template(self, raw: bytes, line: tuple[str, str] | None,
                  splice: Splice | None = None) -> tuple[bytes, ...] | None:
        """``raw`` tagged with the stand-in, split where it stands (one piece when the
        message cannot be tracked); None when copies must be tagged one by one. Made from
        ``splice`` when it was made with this tag, else by tagging. The last few are
        kept."""
        key = (raw, line)
        if key in self._templates:
            return self._templates[key]
        pieces: tuple[bytes, ...] | None = (raw,)
        if splice is not None and splice.key == self._tag_key(line):
            pieces = tuple(spliced(raw, splice).split(_STAND_IN.encode()))
        else:
            result = tag_message(raw, self._tag(_STAND_IN, line), _none_ours)
            if result.trackable:
                pieces = _pieces(raw, result.data, result.parts_tagged, line)
        if len(self._templates) >= _TEMPLATES_KEPT:
            self._templates.pop(next(iter(self._templates)))
        self._templates[key] = pieces
        return pieces

    def _link_edits(self, raw: bytes, key: int) -> LinkEdits:
        """Click tracking's edits for the copy whose key is ``key``: each trackable link,
        numbered in the order met across the message's HTML bodies, to its own /c/ URL."""
        signer = self.click_signer
        assert signer is not None
        skip = list_unsubscribe_of(raw)
        count = [0]

        def new_url(link: Link) -> str | None:
            index = count[0]
            count[0] += 1
            if index >= 2**16 or len(link.url.encode()) > CLICK_URL_LIMIT:
                return None
            return click_url(self.base_url, signer.make(ClickRef(key, index, link.url)))

        def edits(html: str, text_of: Callable[[str], str] | None
                  ) -> list[tuple[int, int, str]]:
            return link_edits(html, new_url, skip=skip, is_ours=self.is_own_pixel,
                              text_of=text_of)

        return edits



def _line(mailbox: MailboxRecord) -> tuple[str, str] | None:
    """The refusal line a personal copy from ``mailbox`` shows: (language, sentence)."""
    return (mailbox.language, mailbox.refusal_text) if mailbox.refusal_line else None


def _pieces(raw: bytes, tagged: bytes, parts: int, line: tuple[str, str] | None
            ) -> tuple[bytes, ...] | None:
    """``tagged`` (``raw`` with the stand-in tag in ``parts`` bodies) split where the
    stand-in stands; None when it is not found once for each place it went (written
    otherwise, as in base64, or in ``raw`` already)."""
    pieces = tuple(tagged.split(_STAND_IN.encode()))
    per_part = 1 if line is None else 2  # the pixel, and the refusal link
    if len(pieces) != parts * per_part + 1 or _STAND_IN.encode() in raw:
        return None
    return pieces


# What a copy's token is written as in a message's template: as long as a token and of its
# alphabet (letters and digits), so quoted-printable lines break where they would with it.
_STAND_IN = "MailseenCopyTokenStandIn0000000"
assert len(_STAND_IN) == TOKEN_LENGTH
_TEMPLATES_KEPT = 8

# The tracking reason of a message whose sender turned tracking off for it alone.
TURNED_OFF = "turned off for this message"
# Who sent a message when no user did: the way it came in.
_WAYS_IN = {"api": "API token", "cli": "command line", "tag": "tag filter", "web": "web app",
            "demo": "demo data"}


def _sender_name(actor: UserRecord | None, source: str) -> str:
    if actor is not None:
        return actor.name or actor.email
    return _WAYS_IN.get(source, source)


def _words(raw: bytes) -> str:
    try:
        return body_words(parse_message(raw))
    except TooComplex:
        return ""


def _none_ours(url: str) -> bool:
    """For putting a pixel into a message whose earlier pixels are already out."""
    return False


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"
