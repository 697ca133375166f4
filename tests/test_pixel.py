"""The pixel endpoint: always the image, a view recorded only for a genuine token."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from mailseen.clock import ManualClock
from mailseen.core.pixel import GIF
from mailseen.core.tokens import TokenRef
from mailseen.records import MailboxIn
from mailseen.services.instance import Instance
from mailseen.web.app import MailseenApp

from .conftest import LiveServer, backdate_sent

NO_CACHE = "no-store, no-cache, must-revalidate, private"


def _tracked_message(instance: Instance) -> tuple[int, str]:
    box = instance.store.add_mailbox(MailboxIn("support@example.com", tracking="enabled"))
    raw = (b"From: support@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n"
           b"Content-Type: text/html\r\n\r\n<html><body><p>Hi</p></body></html>\r\n")
    msg = instance.sender.submit(box, raw)
    return msg.id, instance.signer.make(TokenRef(msg.id))


def _assert_image(resp: httpx.Response, head: bool = False) -> None:
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/gif"
    assert resp.headers["cache-control"].startswith(NO_CACHE)
    assert resp.headers["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert "set-cookie" not in resp.headers
    assert resp.content == (b"" if head else GIF)


OUTLOOK = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0 Microsoft Outlook 16.0.17231")


def test_genuine_token_records_a_view_with_its_headers(live_server: LiveServer,
                                                       instance: Instance) -> None:
    mid, token = _tracked_message(instance)
    backdate_sent(instance, mid)
    headers = {"User-Agent": OUTLOOK, "Accept": "image/*", "Accept-Language": "de-DE",
               "Cookie": "not=kept", "Authorization": "not kept"}
    resp = httpx.get(f"{live_server.url}/t/{token}.gif", headers=headers)
    _assert_image(resp)
    msg = instance.store.get_message(mid)
    assert msg.view_count == 1 and msg.machine_count == 0
    assert msg.first_viewed_at == msg.last_viewed_at is not None
    [view] = instance.store.list_views(mid)
    assert view.ip == "127.0.0.1"
    assert view.user_agent == headers["User-Agent"]
    assert view.headers == {"accept": "image/*", "accept-language": "de-DE"}
    assert view.method == "GET"
    assert view.verdict == "human" and "Outlook" in view.client


@pytest.mark.parametrize(("headers", "method", "reason_part"), [
    ({"User-Agent": "Mozilla/5.0"}, "GET", "Privacy Protection"),
    ({"User-Agent": OUTLOOK}, "HEAD", "HEAD"),
    ({"User-Agent": OUTLOOK, "X-Moz": "prefetch"}, "GET", "prefetch"),
    ({"User-Agent": OUTLOOK, "Cookie": "mailseen_session=abc"}, "GET", "team"),
])
def test_machine_fetches_are_kept_apart_and_never_count(
        live_server: LiveServer, instance: Instance, headers: dict[str, str], method: str,
        reason_part: str) -> None:
    mid, token = _tracked_message(instance)
    backdate_sent(instance, mid)
    httpx.request(method, f"{live_server.url}/t/{token}.gif", headers=headers)
    msg = instance.store.get_message(mid)
    assert (msg.view_count, msg.machine_count) == (0, 1)
    assert not msg.viewed and msg.first_machine_at is not None
    [view] = instance.store.list_views(mid)
    assert view.verdict == "machine" and reason_part.lower() in view.reason.lower()


def test_a_hit_right_after_sending_is_judged_automatic(tmp_path: Path, database_url: str,
                                                       clock: ManualClock) -> None:
    """Sent and hit at the same moment on the server's clock, however slow the machine."""
    live = LiveServer(tmp_path, database_url, clock=clock).start()
    try:
        mid, token = _tracked_message(live.instance)
        for _ in range(100):  # the server's worker sends it
            if live.instance.store.get_message(mid).sent_at is not None:
                break
            time.sleep(0.02)
        httpx.get(f"{live.url}/t/{token}.gif", headers={"User-Agent": OUTLOOK})
        [view] = live.instance.store.list_views(mid)
        assert view.verdict == "machine" and view.at == clock.now()
    finally:
        live.stop()


@pytest.mark.parametrize("path", [
    "/t/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.gif",  # right length, wrong signature
    "/t/short.gif",
    "/t/" + "A" * 5000 + ".gif",
    "/t/..%2F..%2Fetc%2Fpasswd.gif",
    "/t/%00%ff.gif",
    "/t/",
])
def test_any_other_token_gets_the_same_image_and_records_nothing(
        live_server: LiveServer, instance: Instance, path: str) -> None:
    mid, _ = _tracked_message(instance)
    resp = httpx.get(live_server.url + path)
    _assert_image(resp)
    assert instance.store.list_views(mid) == []


def test_truncated_and_tampered_tokens_record_nothing(live_server: LiveServer,
                                                      instance: Instance) -> None:
    mid, token = _tracked_message(instance)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (token[:-1], token + "A", flipped, token.swapcase()):
        _assert_image(httpx.get(f"{live_server.url}/t/{bad}.gif"))
    assert instance.store.list_views(mid) == []


def test_head_answers_like_get_without_a_body(live_server: LiveServer,
                                              instance: Instance) -> None:
    mid, token = _tracked_message(instance)
    resp = httpx.head(f"{live_server.url}/t/{token}.gif")
    _assert_image(resp, head=True)
    assert resp.headers["content-length"] == "43"
    [view] = instance.store.list_views(mid)
    assert view.method == "HEAD"


def test_other_methods_are_refused(live_server: LiveServer) -> None:
    resp = httpx.post(f"{live_server.url}/t/x.gif")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, HEAD"


async def test_concurrent_hits_are_all_durable(live_server: LiveServer,
                                               instance: Instance) -> None:
    mid, token = _tracked_message(instance)
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        replies = await asyncio.gather(*[client.get(f"/t/{token}.gif") for _ in range(200)])
    assert all(r.status_code == 200 for r in replies)
    # Every answered hit was committed before its answer: no waiting needed here.
    msg = instance.store.get_message(mid)
    assert msg.view_count + msg.machine_count == 200
    assert len(instance.store.list_views(mid)) == 200


def test_recording_failure_still_answers_the_image(live_server: LiveServer,
                                                   instance: Instance,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    _mid, token = _tracked_message(instance)

    class Broken:
        def record(self, views: object, judge: object) -> int:
            raise RuntimeError("disk on fire")

        def close(self) -> None:
            pass

    live_server.instance.store.view_writer = Broken  # type: ignore[method-assign,assignment]
    resp = httpx.get(f"{live_server.url}/t/{token}.gif")
    _assert_image(resp)
    assert "pixel hit not recorded" in caplog.text


def test_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path, database_url,
                                                             instance: Instance) -> None:
    mid, token = _tracked_message(instance)
    for trusted, expected in (("", "127.0.0.1"), ("127.0.0.1/32", "203.0.113.9")):
        server = LiveServer(tmp_path, database_url, trusted_proxies=trusted).start()
        try:
            httpx.get(f"{server.url}/t/{token}.gif",
                      headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
        finally:
            server.stop()
        assert instance.store.list_views(mid)[-1].ip == expected


async def test_two_nodes_sharing_one_database_both_record(tmp_path, database_url,
                                                          instance: Instance) -> None:
    mid, token = _tracked_message(instance)
    nodes = [LiveServer(tmp_path, database_url).start() for _ in range(2)]
    try:
        async with httpx.AsyncClient() as client:
            await asyncio.gather(*[client.get(f"{node.url}/t/{token}.gif")
                                   for node in nodes for _ in range(50)])
    finally:
        for node in nodes:
            node.stop()
    msg = instance.store.get_message(mid)
    assert msg.view_count + msg.machine_count == 100 == len(instance.store.list_views(mid))


async def test_a_nul_in_a_header_is_recorded_without_it(instance: Instance) -> None:
    """Straight into the ASGI app (HTTP clients refuse to send a NUL); PostgreSQL refuses NUL
    in text, and the hit shares its transaction with others."""
    mid, token = _tracked_message(instance)
    backdate_sent(instance, mid)
    app = MailseenApp(instance, run_worker=False)
    await app.recorder.start()
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    try:
        await app({"type": "http", "method": "GET", "path": f"/t/{token}.gif",
                   "headers": [(b"user-agent", OUTLOOK.encode() + b"\x00x"),
                               (b"accept", b"image/*\x00")],
                   "client": ("192.0.2.7", 1234)}, receive, send)
    finally:
        await app.recorder.stop()
    assert sent[0]["status"] == 200 and sent[1]["body"] == GIF
    [view] = instance.store.list_views(mid)
    assert view.user_agent == OUTLOOK + "x" and view.headers["accept"] == "image/*"
