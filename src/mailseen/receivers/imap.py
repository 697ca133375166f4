"""The IMAP poller: reads each mailbox's IMAP folder and hands every new message to the one
ingest path.

New mail is found by UID: the store keeps the folder's UIDVALIDITY and the last UID read,
saved after each message, so a restart carries on where it stopped. When UIDVALIDITY
changes (the folder was recreated) the folder is read again from the start and the store's
Message-ID dedupe keeps anything from being stored twice. Messages are fetched with
BODY.PEEK[], so reading them never marks them read for the people using the mailbox.

:meth:`ImapPoller.run` keeps one connection per account, IDLEs where the server offers it
(else reconnects every ``poll_seconds``), backs off exponentially on errors and writes a
one-line status the user can act on ("login failed: wrong username or password"). The IDLE
period, the poll interval and the backoff run on the store's clock; the timeouts that bound
each network call run on the event loop's.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import date, timedelta
from typing import Any, TypeVar

import aioimaplib  # type: ignore[import-untyped]

from ..clock import SYSTEM, Clock, wait
from ..errors import InvalidInput, MailseenError, NotFound
from ..records import ConnectionCheck, ImapState, MailboxRecord
from ..services.inbound import Ingestor
from ..services.mailboxes import Mailboxes

__all__ = ["ImapChecker", "ImapError", "ImapPoller"]

log = logging.getLogger(__name__)
# aioimaplib logs every line it sends and receives at debug level: whole messages, and the
# LOGIN command whenever the password needs quoting (its scrubbing misses the escaped form).
logging.getLogger("aioimaplib").setLevel(logging.INFO)

T = TypeVar("T")
DEFAULT_PORTS = {"implicit": 993, "starttls": 143, "none": 143}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")


class ImapError(MailseenError):
    """An IMAP account cannot be read. ``str()`` is the status shown to the user; ``lost``
    says an established session dropped (servers do that to idle clients)."""

    def __init__(self, message: str, *, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def encode_folder(name: str) -> str:
    """``name`` as an IMAP quoted string in modified UTF-7 (RFC 3501 section 5.1.3)."""
    out: list[str] = []
    wide: list[str] = []

    def flush() -> None:
        if wide:
            b64 = base64.b64encode("".join(wide).encode("utf-16-be")).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            wide.clear()

    for ch in name:
        if " " <= ch <= "~":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            wide.append(ch)
    flush()
    return str(aioimaplib.quoted("".join(out)))


def _since(day: date) -> str:
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


def _text(response: Any) -> str:
    """The human part of a tagged reply."""
    lines = [line for line in response.lines if isinstance(line, bytes)]
    return lines[-1].decode("utf-8", "replace").strip() if lines else response.result


class _Session:
    """One IMAP connection (aioimaplib underneath) with a selected folder. Every call is
    bounded by ``timeout`` and fails at once when the server hangs up."""

    def __init__(self, account: ImapState, timeout: float, tls: ssl.SSLContext,
                 clock: Clock) -> None:
        self.account = account
        self.port = account.port or DEFAULT_PORTS[account.tls]
        self.where = f"{account.host}:{self.port}"
        self.timeout = timeout
        self.tls = tls
        self.clock = clock
        self.lost = asyncio.Event()
        self.imap: Any = None

    @property
    def can_idle(self) -> bool:
        return "IDLE" in self.imap.protocol.capabilities

    async def open(self) -> None:
        a = self.account
        try:
            self.imap = aioimaplib.IMAP4(
                host=a.host, port=self.port, timeout=self.timeout,
                conn_lost_cb=lambda exc: self.lost.set(),
                ssl_context=self.tls if a.tls == "implicit" else None)
            await self._call(self.imap.wait_hello_from_server(), "the greeting")
            if a.tls == "starttls":
                await self._starttls()
        except ImapError as exc:
            reason = "the server closed the connection" if exc.lost else str(exc)
            raise ImapError(f"cannot connect to {self.where}: {reason}") from exc
        except (OSError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"cannot connect to {self.where}: {_reason(exc)}") from exc
        await self._login()

    async def _starttls(self) -> None:
        # aioimaplib has no STARTTLS: send the command, then upgrade the transport in place.
        proto = self.imap.protocol
        if "STARTTLS" not in proto.capabilities:
            raise ImapError("the server does not offer STARTTLS")
        reply = await self._call(proto.execute(
            aioimaplib.Command("STARTTLS", proto.new_tag(), loop=proto.loop)), "STARTTLS")
        if reply.result != "OK":
            raise ImapError(f"STARTTLS refused: {_text(reply)}")
        loop = asyncio.get_running_loop()
        proto.transport = await self._call(loop.start_tls(
            proto.transport, proto, self.tls, server_hostname=self.account.host), "TLS")
        await self._call(proto.capability(), "CAPABILITY")  # what it said before TLS is void

    async def _login(self) -> None:
        if "LOGINDISABLED" in self.imap.protocol.capabilities:
            raise ImapError("login failed: the server takes passwords only over TLS; "
                            "use starttls or implicit TLS")
        a = self.account
        reply = await self._call(
            self.imap.login(aioimaplib.quoted(a.username), a.password), "LOGIN")
        if reply.result == "OK":  # what is offered may change after login
            await self._call(self.imap.protocol.capability(), "CAPABILITY")
            return
        text = _text(reply)
        if "[AUTHENTICATIONFAILED]" in text or not text.startswith("["):
            raise ImapError("login failed: wrong username or password")
        raise ImapError(f"login failed: {text}")

    async def select(self, folder: str) -> int:
        """Select ``folder``; its UIDVALIDITY."""
        if any(c in folder for c in "\r\n\0"):
            raise ImapError(f"folder name {folder!r} is not valid")
        reply = await self._call(self.imap.select(encode_folder(folder)), "SELECT")
        if reply.result != "OK":
            text = _text(reply)
            if "[NONEXISTENT]" in text or "doesn't exist" in text.lower():
                raise ImapError(f"folder '{folder}' does not exist")
            raise ImapError(f"cannot open folder '{folder}': {text}")
        for line in reply.lines:
            found = _UIDVALIDITY.search(line) if isinstance(line, bytes) else None
            if found:
                return int(found.group(1))
        raise ImapError(f"the server gave no UIDVALIDITY for folder '{folder}'")

    async def append(self, folder: str, raw: bytes) -> None:
        """File ``raw`` in ``folder``, marked read (it is the team's own message)."""
        if any(c in folder for c in "\r\n\0"):
            raise ImapError(f"folder name {folder!r} is not valid")
        reply = await self._call(self.imap.append(raw, mailbox=encode_folder(folder),
                                                  flags="(\\Seen)"), "APPEND")
        if reply.result != "OK":
            raise ImapError(f"cannot file the message in '{folder}': {_text(reply)}")

    async def new_uids(self, after: int, since: date) -> list[int]:
        """UIDs above ``after`` of messages that arrived on or after ``since``, ascending."""
        reply = await self._call(self.imap.uid_search(
            f"UID {after + 1}:*", "SINCE", _since(since), charset=None), "UID SEARCH")
        if reply.result != "OK":
            raise ImapError(f"search failed: {_text(reply)}")
        uids = {int(tok) for line in reply.lines[:-1] if isinstance(line, bytes)
                for tok in line.split() if tok.isdigit()}
        # "n:*" always matches the highest UID, even one below n.
        return sorted(uid for uid in uids if uid > after)

    async def fetch(self, uid: int) -> bytes | None:
        """The message with ``uid``, or None when it was deleted meanwhile."""
        reply = await self._call(self.imap.uid("fetch", str(uid), "(BODY.PEEK[])"), "FETCH")
        if reply.result != "OK":
            raise ImapError(f"fetching UID {uid} failed: {_text(reply)}")
        for item in reply.lines:
            if isinstance(item, bytearray):  # the literal: the message itself
                return bytes(item)
        return None

    async def idle(self, seconds: float, stop: asyncio.Event) -> None:
        """Wait in IDLE until the server announces new mail, ``seconds`` pass on the clock
        or ``stop``."""
        imap = self.imap
        queue = imap.protocol.idle_queue
        while not queue.empty():  # left over from the last IDLE
            queue.get_nowait()
        # aioimaplib ends an IDLE after 29 minutes of its own (RFC 2177's limit): a backstop
        # behind the clock's period, which ends it first.
        idling = await self._call(imap.idle_start(), "IDLE")
        period = asyncio.ensure_future(self.clock.sleep(seconds))
        stopping = asyncio.ensure_future(stop.wait())
        lost = asyncio.ensure_future(self.lost.wait())
        push: asyncio.Future[Any] | None = None
        try:
            while True:
                push = asyncio.ensure_future(imap.wait_server_push())
                done, _ = await asyncio.wait({push, period, stopping, lost},
                                             return_when=asyncio.FIRST_COMPLETED)
                if push not in done or push.exception() is not None:  # time, stop, lost
                    break
                lines = push.result()
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH or any(
                        isinstance(line, bytes) and line.endswith(b"EXISTS") for line in lines):
                    break
        finally:
            for fut in (push, period, stopping, lost):
                if fut is not None:
                    fut.cancel()
        if self.lost.is_set():
            raise ImapError(f"connection to {self.where} lost", lost=True)
        imap.idle_done()
        await self._call(idling, "DONE")

    async def close(self) -> None:
        """Log out politely (bounded), then drop the connection."""
        proto = self.imap.protocol if self.imap is not None else None
        if proto is None or proto.transport is None:
            return
        if not self.lost.is_set() and not proto.has_pending_idle_command():
            with suppress(MailseenError, aioimaplib.AioImapException):
                await self._call(proto.logout(), "LOGOUT", min(self.timeout, 5))
        proto.transport.close()
        try:
            await asyncio.wait_for(self.lost.wait(), 1)
        except TimeoutError:  # a TLS shutdown the server does not answer
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once (a TLS one without waiting for the server)."""
        proto = self.imap.protocol if self.imap is not None else None
        if proto is not None and proto.transport is not None:
            proto.transport.abort()

    async def _call(self, aw: Awaitable[T], what: str, timeout: float | None = None) -> T:
        task = asyncio.ensure_future(aw)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait({task, lost}, timeout=timeout or self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled: take the command down too
            task.cancel()
            raise
        finally:
            lost.cancel()
        if task in done:
            try:
                return task.result()
            except (TimeoutError, aioimaplib.CommandTimeout) as exc:
                raise ImapError(f"no answer to {what} within {self.timeout:g}s") from exc
            except aioimaplib.AioImapException as exc:
                raise ImapError(f"{what} failed: {exc}") from exc
        task.cancel()
        if lost in done:
            raise ImapError(f"connection to {self.where} lost", lost=True)
        raise ImapError(f"no answer to {what} within {timeout or self.timeout:g}s")


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The TLS context IMAP servers are checked with: the system's CAs and ``ca_file``."""
    tls = ssl.create_default_context()
    if ca_file:
        try:
            tls.load_verify_locations(ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput(f"cannot read CA file {ca_file}: {_reason(exc)}",
                               "ca_file") from exc
    return tls


_TLS_WORDS = {"implicit": "TLS from the start", "starttls": "STARTTLS",
              "none": "no encryption"}


class ImapChecker:
    """Tests an IMAP account's settings the way the poller uses them: connect, TLS as set,
    log in, open the folder; then log out. What :meth:`Mailboxes.test_imap` calls (handed
    in by whoever opens the instance: services cannot import a receiver)."""

    def __init__(self, ca_file: str | None = None) -> None:
        self.ca_file = ca_file
        self._tls: ssl.SSLContext | None = None  # read when first needed: a CA file that
        # cannot be read fails the test that needs it, not every command that wires this

    async def __call__(self, account: ImapState, timeout: float) -> ConnectionCheck:
        if not account.host:
            return ConnectionCheck("imap", False, "no IMAP server set")
        if self._tls is None:
            self._tls = tls_context(self.ca_file)
        session = _Session(account, timeout, self._tls, SYSTEM)
        try:
            await session.open()
            await session.select(account.folder)
        except ImapError as exc:
            session.abort()
            return ConnectionCheck("imap", False, str(exc))
        except BaseException:
            session.abort()
            raise
        await session.close()
        return ConnectionCheck("imap", True, (
            f"connected to {session.where}, {_TLS_WORDS[account.tls]}, signed in as "
            f"{account.username}, folder '{account.folder}' found"))


class SentFiler:
    """Files a copy of a message a mail client submitted in its mailbox's IMAP Sent folder
    (``imap_sent_append``), for clients that keep none of their own. Best effort: the
    message is queued already, so a failure is logged, never raised."""

    def __init__(self, mailboxes: Mailboxes, *, ca_file: str | None = None,
                 timeout: float = 30) -> None:
        self.mailboxes = mailboxes
        self.ca_file = ca_file
        self.timeout = timeout
        self._tls: ssl.SSLContext | None = None

    async def __call__(self, mailbox_id: int, raw: bytes) -> bool:
        """Whether the copy was filed."""
        try:
            accounts = await asyncio.to_thread(self.mailboxes.imap_accounts)
            account = next((a for a in accounts if a.mailbox_id == mailbox_id), None)
            if account is None or not account.sent_folder:
                return False
            if self._tls is None:
                self._tls = tls_context(self.ca_file)
            session = _Session(account, self.timeout, self._tls, SYSTEM)
            try:
                await session.open()
                await session.append(account.sent_folder, raw)
            except BaseException:
                session.abort()
                raise
            await session.close()
        except MailseenError as exc:
            log.warning("mailbox %d: cannot file a sent copy: %s", mailbox_id, exc)
            return False
        return True


class ImapPoller:
    def __init__(self, mailboxes: Mailboxes, ingestor: Ingestor, *, idle_seconds: float = 300,
                 poll_seconds: float = 60, retry_base: float = 5, retry_max: float = 600,
                 timeout: float = 30, ca_file: str | None = None,
                 clock: Clock | None = None) -> None:
        self.mailboxes = mailboxes
        self.ingestor = ingestor
        self.idle_seconds = idle_seconds
        self.poll_seconds = poll_seconds
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.timeout = timeout
        self.clock = clock or mailboxes.clock
        self.tls = tls_context(ca_file)
        self._refresh = asyncio.Event()

    def backoff(self, failures: int) -> float:
        return float(min(self.retry_max, self.retry_base * 2 ** max(0, failures - 1)))

    def refresh(self) -> None:
        """Re-read the accounts now, say after a mailbox's IMAP settings changed (call from
        the poller's event loop)."""
        self._refresh.set()

    async def poll_once(self, account: ImapState) -> int:
        """Read ``account``'s new mail once; the number of messages stored. An account that
        cannot be read gets status "error" and raises :class:`ImapError`."""
        try:
            async with self._session(account) as session:
                count, _ = await self._poll(session, account)
        except ImapError as exc:
            await self._report(account.mailbox_id, str(exc))
            raise
        return count

    async def run(self, stop: asyncio.Event) -> None:
        """Watch every account with IMAP settings until ``stop`` is set; accounts are read
        again every ``poll_seconds`` (or on :meth:`refresh`), so changes are picked up."""
        watchers: dict[int, tuple[tuple[object, ...], asyncio.Task[None]]] = {}
        retired: list[asyncio.Task[None]] = []
        try:
            while not stop.is_set():
                self._refresh.clear()
                try:
                    accounts = await asyncio.to_thread(self.mailboxes.imap_accounts)
                except MailseenError as exc:
                    log.warning("cannot read the IMAP accounts: %s", exc)
                else:
                    retired = [t for t in retired if not t.done()]
                    retired += self._reconcile(watchers, accounts, stop)
                await wait(self.clock, self.poll_seconds, self._refresh, stop)
        finally:
            running = [task for _, task in watchers.values()]
            if running and stop.is_set():  # they see stop and log out; cancel the slow ones
                await asyncio.wait(running, timeout=self.timeout)
            for task in running + retired:
                task.cancel()
            await asyncio.gather(*running, *retired, return_exceptions=True)

    def _reconcile(self, watchers: dict[int, tuple[tuple[object, ...], asyncio.Task[None]]],
                   accounts: list[ImapState], stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """Start a watcher for each new or changed account; return the ones stopped."""
        retired = []
        wanted = {a.mailbox_id: (a.host, a.port, a.tls, a.username, a.password, a.folder,
                                 a.sent_folder) for a in accounts}
        for mailbox_id, (key, task) in list(watchers.items()):
            if wanted.get(mailbox_id) != key or task.done():
                task.cancel()
                retired.append(task)
                del watchers[mailbox_id]
        for mailbox_id, key in wanted.items():
            if mailbox_id not in watchers:
                watchers[mailbox_id] = (key, asyncio.create_task(
                    self._watch(mailbox_id, stop), name=f"imap-{mailbox_id}"))
        return retired

    async def _watch(self, mailbox_id: int, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                account = await self._account(mailbox_id)
                if account is None:
                    return
                async with self._session(account) as session:
                    while not stop.is_set():
                        _, account = await self._poll(session, account, stop)
                        failures = 0
                        if not session.can_idle:
                            break
                        await session.idle(self.idle_seconds, stop)
                if not stop.is_set():
                    await wait(self.clock, self.poll_seconds, stop)
            except NotFound:  # the mailbox was deleted
                return
            except Exception as exc:  # a watcher must outlive any failure
                failures += 1
                if isinstance(exc, ImapError) and exc.lost and failures == 1:
                    log.info("mailbox %d: %s; reconnecting", mailbox_id, exc)
                    continue
                if not isinstance(exc, MailseenError):
                    log.exception("mailbox %d: IMAP polling failed", mailbox_id)
                delay = self.backoff(failures)
                log.warning("mailbox %d: %s; retrying in %gs", mailbox_id, exc, delay)
                await self._report(mailbox_id, str(exc))
                await wait(self.clock, delay, stop)

    async def _account(self, mailbox_id: int) -> ImapState | None:
        accounts = await asyncio.to_thread(self.mailboxes.imap_accounts)
        return next((a for a in accounts if a.mailbox_id == mailbox_id), None)

    @asynccontextmanager
    async def _session(self, account: ImapState) -> AsyncIterator[_Session]:
        if not account.host:
            raise ImapError("no IMAP host set")
        session = _Session(account, self.timeout, self.tls, self.clock)
        try:
            await session.open()
            yield session
        except BaseException:
            session.abort()
            raise
        else:
            await session.close()

    async def _poll(self, session: _Session, account: ImapState,
                    stop: asyncio.Event | None = None) -> tuple[int, ImapState]:
        """Store the folder's new messages; the count and the account's new position."""
        mailbox = await asyncio.to_thread(self.mailboxes.get, None, account.mailbox_id)
        uidvalidity = await session.select(account.folder)
        last = account.last_uid
        if uidvalidity != account.uidvalidity:
            if account.uidvalidity is not None:
                log.info("%s: UIDVALIDITY of '%s' changed; reading it again", mailbox.address,
                         account.folder)
            last = 0
            await asyncio.to_thread(self.mailboxes.imap_progress, mailbox.id, uidvalidity, 0)
        # A reply to our mail cannot be older than the mailbox: leave older mail alone.
        since = (mailbox.created_at - timedelta(days=1)).date()
        count = 0
        for uid in await session.new_uids(last, since):
            if stop is not None and stop.is_set():
                break
            raw = await session.fetch(uid)
            if raw is not None and await self._ingest(mailbox, raw, uid, account.folder):
                count += 1
            last = uid
            await asyncio.to_thread(self.mailboxes.imap_progress, mailbox.id, uidvalidity, uid)
        account = replace(account, uidvalidity=uidvalidity, last_uid=last)
        if account.sent_folder and not (stop is not None and stop.is_set()):
            account = await self._poll_sent(session, account, mailbox, since, stop)
            await session.select(account.folder)  # IDLE watches the folder replies land in
        await asyncio.to_thread(self.mailboxes.imap_report, mailbox.id, "ok", None)
        return count, account

    async def _poll_sent(self, session: _Session, account: ImapState, mailbox: MailboxRecord,
                         since: date, stop: asyncio.Event | None) -> ImapState:
        """Record what the team sent around mailseen, from the Sent folder (read each time
        the inbox is, without IDLE of its own)."""
        uidvalidity = await session.select(account.sent_folder)
        last = account.sent_last_uid if uidvalidity == account.sent_uidvalidity else 0
        for uid in await session.new_uids(last, since):
            if stop is not None and stop.is_set():
                break
            raw = await session.fetch(uid)
            if raw is not None:
                await self._record_sent(mailbox, raw, uid, account.sent_folder)
            last = uid
            await asyncio.to_thread(self.mailboxes.imap_sent_progress, mailbox.id,
                                    uidvalidity, uid)
        if last == 0 and uidvalidity != account.sent_uidvalidity:
            await asyncio.to_thread(self.mailboxes.imap_sent_progress, mailbox.id,
                                    uidvalidity, 0)
        return replace(account, sent_uidvalidity=uidvalidity, sent_last_uid=last)

    async def _record_sent(self, mailbox: MailboxRecord, raw: bytes, uid: int,
                           folder: str) -> None:
        try:
            await asyncio.to_thread(self.ingestor.record_sent, mailbox, raw)
        except InvalidInput as exc:
            log.warning("%s: skipped UID %d in '%s': %s", mailbox.address, uid, folder, exc)
        except MailseenError:
            raise
        except Exception:
            log.exception("%s: could not record UID %d in '%s'; skipped", mailbox.address,
                          uid, folder)

    async def _ingest(self, mailbox: MailboxRecord, raw: bytes, uid: int, folder: str) -> bool:
        """Store one message; False for a duplicate or one that had to be skipped."""
        try:
            result = await asyncio.to_thread(self.ingestor.ingest, mailbox, raw, "imap")
        except InvalidInput as exc:  # not a message: reading it again will not help
            log.warning("%s: skipped UID %d in '%s': %s", mailbox.address, uid, folder, exc)
            return False
        except MailseenError:  # the database: retry the same message later
            raise
        except Exception:
            # A bug met by this one message must not stop the mailbox; it stays on the
            # server, and resetting the mailbox's IMAP position reads it again.
            log.exception("%s: could not store UID %d in '%s'; skipped", mailbox.address, uid,
                          folder)
            return False
        return not result.duplicate

    async def _report(self, mailbox_id: int, error: str) -> None:
        try:
            await asyncio.to_thread(self.mailboxes.imap_report, mailbox_id, "error", error)
        except MailseenError as exc:
            log.warning("mailbox %d: cannot save the IMAP status: %s", mailbox_id, exc)
