"""Click tracking: which links are rewritten, the signed redirect, how clicks are judged and
recorded (on SQLite and PostgreSQL), and that nothing else in a message changes."""

from __future__ import annotations

import asyncio
import binascii
import bisect
import difflib
import email
import email.policy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailseen.core.clicks import ClickClassifier
from mailseen.core.hits import Hit
from mailseen.core.inject import tag_message
from mailseen.core.links import (
    Link,
    find_links,
    link_edits,
    list_unsubscribe_of,
    unescape_attribute,
)
from mailseen.core.mimetree import parse_tree
from mailseen.core.tokens import ClickRef, ClickSigner, TokenRef, TokenSigner
from mailseen.records import ClickIn, Judged, MailboxIn, MailboxRecord, MessageRecord
from mailseen.services.clicks import ClickJudge, record_clicks
from mailseen.services.instance import Instance
from mailseen.storage.models import ClickEvent, ViewEvent

from .cli_runner import Cli, error, ok
from .conftest import API_TOKEN, LiveServer, backdate_sent, html_of
from .web_client import PASSWORD, WebClient

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "newsletters"
SECRET = b"0123456789abcdef0123456789abcdef"
BASE = "https://track.example.com"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
CLICK = re.compile(r"/c/([A-Za-z0-9_-]+)")
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

HTML = """<html><body>
<p>Hello! See <a href="https://shop.example.com/offer?a=1&amp;b=2">our offer</a>,
<a class=x href=https://shop.example.com/terms>the terms</a> and
<a href='https://blog.example.com/post#part'>the post</a>.</p>
<p><a href="mailto:sales@example.com">write</a> <a href="tel:+331234">call</a>
<a href="#top">top</a> <a href="/relative">relative</a> <a href="javascript:void(0)">js</a>
<a href="https://list.example.com/u/1">manage</a>
<a href="https://shop.example.com/leave">Unsubscribe</a>
<a href="https://shop.example.com/bye"><span>Se désabonner</span></a></p>
<!-- <a href="https://hidden.example.com/">in a comment</a> -->
<div class="gmail_quote">On Monday Bob wrote:
<blockquote><a href="https://old.example.com/quoted">old link</a></blockquote></div>
<blockquote type="cite"><a href="https://old.example.com/cited">cited</a></blockquote>
<p><a href="https://shop.example.com/after">after the quotes</a></p>
<div id="divRplyFwdMsg"><b>From:</b> Bob</div>
<p><a href="https://old.example.com/outlook">outlook quoted</a></p>
</body></html>"""
TRACKED = ["https://shop.example.com/offer?a=1&b=2", "https://shop.example.com/terms",
           "https://blog.example.com/post#part", "https://shop.example.com/after"]


# -- which links ------------------------------------------------------------------------------

def test_only_plain_web_links_outside_quotes_and_unsubscribes_are_tracked() -> None:
    skip = list_unsubscribe_of(b"Subject: x\r\nList-Unsubscribe: <mailto:u@list.example.com>,"
                               b"\r\n <https://list.example.com/u/1>\r\n\r\nbody")
    assert skip == frozenset({"https://list.example.com/u/1"})
    assert [link.url for link in find_links(HTML, skip=skip)] == TRACKED


def test_link_edits_change_only_the_href_values() -> None:
    skip = frozenset({"https://list.example.com/u/1"})
    edits = link_edits(HTML, lambda link: "https://t.example/c/X", skip=skip)
    assert [HTML[start:end] for start, end, _ in edits] == [
        "https://shop.example.com/offer?a=1&amp;b=2", "https://shop.example.com/terms",
        "https://blog.example.com/post#part", "https://shop.example.com/after"]
    pieces, last = [], 0
    for start, end, new in edits:
        pieces += [HTML[last:start], new]
        last = end
    rewritten = "".join([*pieces, HTML[last:]])
    # Everything between the href values is as it was.
    assert rewritten.split("https://t.example/c/X") == [
        HTML[a:b] for a, b in zip([0, *(e for _, e, _ in edits)],
                                  [*(s for s, _, _ in edits), len(HTML)], strict=True)]


def test_href_values_are_read_as_a_browser_reads_attributes() -> None:
    html = ('<a href="https://a.example/p?x=1&region=us&copy=2&amp;b=3&#38;c=4&not;d">x</a>'
            "<a href=' https://b.example/\u00e9t\u00e9 '>y</a>")
    assert [link.url for link in find_links(html)] == [
        "https://a.example/p?x=1&region=us&copy=2&b=3&c=4%C2%ACd",
        "https://b.example/%C3%A9t%C3%A9"]
    assert unescape_attribute("&notit; &amp &ampx &#x26;") == "&notit; & &ampx &"


def test_our_own_links_are_not_wrapped_again() -> None:
    html = '<a href="https://track.example.com/c/abc">x</a><a href="https://a.example/">y</a>'
    found = find_links(html, is_ours=lambda url: "/c/" in url)
    assert [link.url for link in found] == ["https://a.example/"]


# -- the token ---------------------------------------------------------------------------------

def test_a_click_token_names_its_copy_link_and_url_and_refuses_any_change() -> None:
    signer = ClickSigner(SECRET)
    ref = ClickRef(12345, 3, "https://shop.example.com/offer?a=1&b=2")
    token = signer.make(ref)
    assert signer.check(token) == ref
    for i in range(len(token)):  # every single changed character is refused
        changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
        assert signer.check(changed) is None
    assert signer.check(token[:-1]) is None and signer.check(token + "A") is None
    # the same copy and link with another URL, signed by another key: refused
    other = ClickSigner(b"another secret key of 32 bytes!!").make(
        ClickRef(12345, 3, "https://evil.example.net/"))
    assert signer.check(other) is None
    # a pixel token is no click token
    assert signer.check(TokenSigner(SECRET).make(TokenRef(copy_key=12345))) is None
    assert signer.check("") is None and signer.check("é" * 40) is None


# -- byte preservation ----------------------------------------------------------------------

def _message(html: str, cte: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sales@example.com"
    msg["To"] = "erin@example.org"
    msg["Subject"] = "News"
    msg.set_content("plain text version\n")
    msg.add_alternative(html, subtype="html", cte=cte)
    return msg.as_bytes(policy=email.policy.SMTP)


def _leaves(raw: bytes) -> list[tuple[str, bytes]]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in msg.walk()
            if not p.is_multipart()]


def _html_body(raw: bytes) -> bytes:
    [part] = [p for p in parse_tree(raw).walk() if p.content_type == "text/html"]
    return raw[part.body_start : part.end]


def _assert_only_link_lines_changed(raw: bytes, out: bytes, name: str) -> None:
    """In a quoted-printable body, the encoded lines that changed all belong to decoded
    lines holding a tracked link: every other line keeps its encoded bytes."""
    before, after = _html_body(raw).split(b"\r\n"), _html_body(out).split(b"\r\n")
    decoded_line, n = [], 0
    for line in before:  # which decoded line each encoded line is part of
        decoded_line.append(n)
        if not line.endswith(b"="):
            n += 1
    content = binascii.a2b_qp(_html_body(raw)).decode("latin-1")
    starts = [0] + [i + 1 for i, c in enumerate(content) if c == "\n"]
    linked = {bisect.bisect_right(starts, link.start) - 1
              for link in find_links(content, text_of=_utf8)}
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for op, i1, i2, _, _ in matcher.get_opcodes():
        if op in ("replace", "delete"):
            assert {decoded_line[i] for i in range(i1, i2)} <= linked, name


def _utf8(text: str) -> str:
    return text.encode("latin-1").decode("utf-8", "replace")


def _rewritten(raw: bytes, signer: ClickSigner) -> tuple[bytes, int]:
    """``raw`` with its links pointed at /c/ tokens, and how many."""
    count = [0]

    def new_url(link: Link) -> str:
        count[0] += 1
        return f"{BASE}/c/" + signer.make(ClickRef(7, count[0] - 1, link.url))

    def edits(text: str, text_of: Callable[[str], str] | None) -> list[tuple[int, int, str]]:
        return link_edits(text, new_url, text_of=text_of)

    return tag_message(raw, "", lambda url: False, edits).data, count[0]


def _mapped_back(original: str, new: str, signer: ClickSigner) -> str:
    """``new`` with each /c/ URL replaced by the original href value of its link."""
    links = iter(find_links(original, text_of=_utf8))

    def back(m: re.Match[str]) -> str:
        ref = signer.check(m.group(1))
        link = next(links)
        assert ref is not None and ref.url == link.url
        return original[link.start : link.end]

    return re.sub(re.escape(BASE) + r"/c/([A-Za-z0-9_-]+)", back, new)


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
def test_corpus_messages_change_only_in_their_tracked_hrefs(cte: str) -> None:
    signer = ClickSigner(SECRET)
    files = sorted(CORPUS.glob("*.html"))
    assert files, f"no corpus at {CORPUS}"
    rewritten_links = 0
    for path in files:
        raw = _message(path.read_text("utf-8", "replace"), cte)
        out, count = _rewritten(raw, signer)
        rewritten_links += count
        head = raw.index(b"\r\n\r\n")
        assert out[:head] == raw[:head], path.name  # the header, byte for byte
        before, after = _leaves(raw), _leaves(out)
        assert [t for t, _ in before] == [t for t, _ in after]
        for (ctype, old), (_, new) in zip(before, after, strict=True):
            if ctype != "text/html":
                assert new == old
            else:  # each /c/ URL maps back to the link's original href value
                original = old.decode("latin-1")
                assert _mapped_back(original, new.decode("latin-1"), signer) == original
        if cte == "quoted-printable":
            _assert_only_link_lines_changed(raw, out, path.name)
    assert rewritten_links > 50


# -- classification -----------------------------------------------------------------------

def _hit(method: str = "GET", ua: str = CHROME, seconds: float | None = 3600,
         others: int = 0, ip: str = "198.51.100.7", **headers: str) -> Hit:
    return Hit(method, {"user-agent": ua, **headers}, ip, seconds, others)


@pytest.mark.parametrize(("hit", "verdict", "reason"), [
    (_hit(), "human", "followed the link"),
    (_hit(method="HEAD"), "machine", "HEAD request"),
    (_hit(**{"sec-purpose": "prefetch"}), "machine", "prefetch request"),
    (_hit(seconds=4), "machine", "followed within 15 s of sending"),
    (_hit(others=2), "machine", "one client followed 3 links"),
    (_hit(ua="Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"), "machine",
     "link preview bot"),
    (_hit(ua="Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
             "(via ggpht.com GoogleImageProxy)"), "machine", "does not follow links"),
    (_hit(ua="python-requests/2.31"), "machine", "script or HTTP library"),
    (_hit(ua=""), "machine", "no user agent"),
])
def test_clicks_are_judged_like_pixel_hits_with_rules_of_their_own(
        hit: Hit, verdict: str, reason: str) -> None:
    judged = ClickClassifier().classify(hit)
    assert judged.verdict == verdict and reason in judged.reason


def test_a_burst_across_links_is_found_and_a_double_click_counts_once() -> None:
    judge = ClickJudge()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    sent = at - timedelta(hours=1)

    def click(link: int, seconds: float) -> ClickIn:
        return ClickIn(0, 0, at + timedelta(seconds=seconds), "GET", "198.51.100.7", CHROME,
                       copy_key=9, link=link, url="https://a.example/")

    first, since = judge(click(0, 0), sent)
    assert first.verdict == "human" and since is None
    again, _ = judge(click(0, 0.3), sent)  # a double click
    assert again.verdict == "machine" and "repeat" in again.reason
    burst, since = judge(click(1, 0.5), sent)  # a second link half a second later
    assert burst.verdict == "machine" and since is not None and since <= at
    later, _ = judge(click(2, 600), sent)  # another link ten minutes on: a person
    assert later.verdict == "human"


# -- sending and the redirect, on the database --------------------------------------------

def _box(instance: Instance, **kw: object) -> MailboxRecord:
    options: dict[str, object] = {"tracking": "enabled", "click_tracking": "enabled", **kw}
    return instance.store.add_mailbox(MailboxIn("sales@example.com", "Acme Sales",
                                                **options))  # type: ignore[arg-type]


def _send(instance: Instance, box: MailboxRecord, to: list[str]) -> MessageRecord:
    msg = EmailMessage()
    msg["From"] = box.address
    msg["To"] = ", ".join(to)
    msg["Subject"] = "Offer"
    msg["List-Unsubscribe"] = "<mailto:u@list.example.com>, <https://list.example.com/u/1>"
    msg.set_content("Our offer\n")
    msg.add_alternative(HTML, subtype="html")
    return instance.sender.submit(box, msg.as_bytes(policy=email.policy.SMTP))


def _delivered(instance: Instance, msg: MessageRecord) -> dict[str | None, bytes]:
    box = instance.store.get_mailbox(msg.mailbox_id)
    raw = instance.store.get_raw(msg.id)
    message = instance.store.get_message(msg.id)
    return {c.recipient: instance.sender.copy_bytes(raw, c, box, message.clicks_tracked)
            for c in instance.store.copies_of([msg.id])[msg.id]}


def test_links_are_rewritten_per_personal_copy_only_where_click_tracking_is_on(
        instance: Instance) -> None:
    box = _box(instance)
    instance.consents.set_consent(None, "refuser@example.org", "refused", "api")
    msg = _send(instance, box, ["erin@example.org", "frank@example.org",
                                "refuser@example.org"])
    assert instance.store.get_message(msg.id).clicks_tracked
    copies = _delivered(instance, msg)
    erin, frank = html_of(copies["erin@example.org"]), html_of(copies["frank@example.org"])
    assert len(CLICK.findall(erin)) == len(TRACKED) == len(CLICK.findall(frank))
    assert CLICK.findall(erin) != CLICK.findall(frank)  # each copy its own tokens
    signer = instance.sender.click_signer
    assert signer is not None
    refs = [signer.check(t) for t in CLICK.findall(erin)]
    assert [r.url for r in refs if r] == TRACKED and [r.link for r in refs if r] == [0, 1, 2, 3]
    assert "/c/" not in html_of(copies["refuser@example.org"])  # no personal tracking
    # nor for one not consenting under with-consent, nor one on the do-not-track list
    instance.consents.add_do_not_track(None, "listed.example")
    strict = instance.mailboxes.update(None, box.id, {"tracking_policy": "with-consent"})
    instance.consents.set_consent(None, "granted@example.org", "granted", "api")
    msg4 = _send(instance, strict, ["granted@example.org", "unknown@example.org",
                                    "ann@listed.example"])
    got = _delivered(instance, msg4)
    assert "/c/" in html_of(got["granted@example.org"])
    assert "/c/" not in html_of(got["unknown@example.org"])
    assert "/c/" not in html_of(got["ann@listed.example"])
    box = instance.mailboxes.update(None, box.id, {"tracking_policy": "global"})
    assert _delivered(instance, msg) == copies  # a retry sends the same bytes
    # off for the mailbox (the global setting is on): nothing rewritten
    instance.mailboxes.set_global_clicks(None, True)
    off = instance.mailboxes.update(None, box.id, {"click_tracking": "disabled"})
    msg2 = _send(instance, off, ["erin@example.org"])
    assert "/c/" not in html_of(_delivered(instance, msg2)["erin@example.org"])
    # aggregate: one shared pixel and links left as they are
    agg = instance.mailboxes.update(None, box.id, {"click_tracking": "global",
                                                   "tracking_policy": "aggregate"})
    msg3 = _send(instance, agg, ["erin@example.org"])
    assert all("/c/" not in html_of(b) for b in _delivered(instance, msg3).values())


def _clicks(instance: Instance, message_id: int) -> list[tuple[object, ...]]:
    with instance.db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(ClickEvent.link, ClickEvent.verdict, ClickEvent.reason, ClickEvent.copy_id)
            .where(ClickEvent.message_id == message_id).order_by(ClickEvent.id))]


def _follow(server: LiveServer, token: str, method: str = "GET", ua: str = CHROME,
            ip: str = "198.51.100.7") -> httpx.Response:
    return httpx.request(method, f"{server.url}/c/{token}", follow_redirects=False,
                         headers={"User-Agent": ua, "X-Forwarded-For": ip})


def _tokens(instance: Instance, msg: MessageRecord, who: str) -> list[str]:
    return CLICK.findall(html_of(_delivered(instance, msg)[who]))


def test_a_person_s_click_redirects_counts_and_implies_a_view(
        live_server: LiveServer, instance: Instance) -> None:
    box = _box(instance)
    msg = _send(instance, box, ["erin@example.org", "frank@example.org"])
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    tokens = _tokens(instance, msg, "erin@example.org")
    resp = _follow(live_server, tokens[0])
    assert resp.status_code == 302
    assert resp.headers["location"] == TRACKED[0]
    assert resp.headers["cache-control"] == "no-store, private"
    [(link, verdict, _, copy_id)] = _clicks(instance, msg.id)
    erin = {c.recipient: c for c in instance.store.copies_of([msg.id])[msg.id]}[
        "erin@example.org"]
    assert (link, verdict, copy_id) == (0, "human", erin.id)
    after = instance.store.get_message(msg.id)
    assert after.view_count == 1 and after.viewed_copies == 1  # the click implies a view
    with instance.db.engine.connect() as conn:
        [reason] = conn.execute(select(ViewEvent.reason).where(
            ViewEvent.message_id == msg.id)).scalars()
    assert reason.startswith("followed a link")
    api = httpx.get(f"{live_server.url}/api/v1/messages/{msg.id}", headers=AUTH).json()
    assert api["clicks_tracked"] is True
    assert api["clicks"][0]["url"] == TRACKED[0]
    assert api["clicks"][0]["recipient_address"] == "erin@example.org"
    rows = {r["recipient"]: r for r in api["recipients"]}
    assert rows["erin@example.org"]["click_count"] == 1
    assert rows["frank@example.org"]["click_count"] == 0


def test_scanner_like_clients_are_redirected_but_never_counted(
        live_server: LiveServer, instance: Instance) -> None:
    box = _box(instance)
    msg = _send(instance, box, ["erin@example.org"])
    asyncio.run(instance.worker().drain())
    tokens = _tokens(instance, msg, "erin@example.org")
    # at delivery: a gateway follows every link within seconds
    for token in tokens:
        assert _follow(live_server, token, ip="203.0.113.9").status_code == 302
    assert {v for _, v, _, _ in _clicks(instance, msg.id)} == {"machine"}
    backdate_sent(instance, msg.id)
    # HEAD, an hour on
    assert _follow(live_server, tokens[0], "HEAD", ip="203.0.113.10").status_code == 302
    # a burst across all links an hour on: all machine, the first one included
    for token in tokens:
        _follow(live_server, token, ip="203.0.113.11")
    rows = _clicks(instance, msg.id)
    assert len(rows) == 2 * len(tokens) + 1
    assert {v for _, v, _, _ in rows} == {"machine"}
    assert instance.store.get_message(msg.id).view_count == 0


def test_the_redirect_goes_nowhere_it_did_not_sign(
        live_server: LiveServer, instance: Instance) -> None:
    box = _box(instance)
    msg = _send(instance, box, ["erin@example.org"])
    asyncio.run(instance.worker().drain())
    [token, *_] = _tokens(instance, msg, "erin@example.org")
    signer = instance.sender.click_signer
    assert signer is not None
    ref = signer.check(token)
    assert ref is not None
    forged = ClickSigner(b"not this installation's key!!!!!").make(
        ClickRef(ref.copy_key, ref.link, "https://evil.example.net/"))
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    for bad in (forged, tampered, token[:20], "x" * 40, token + "/evil.example.net",
                "https:%2F%2Fevil.example.net"):
        resp = _follow(live_server, bad)
        assert resp.status_code == 404, bad
        assert "location" not in resp.headers
        assert "not valid" in resp.text
    assert httpx.post(f"{live_server.url}/c/{token}").status_code == 405
    assert _clicks(instance, msg.id) == []


def test_a_refused_recipient_s_click_is_followed_and_not_recorded(
        live_server: LiveServer, instance: Instance) -> None:
    box = _box(instance)
    msg = _send(instance, box, ["erin@example.org"])
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    [token, *_] = _tokens(instance, msg, "erin@example.org")
    instance.consents.set_consent(None, "erin@example.org", "refused", "api")
    resp = _follow(live_server, token)
    assert resp.status_code == 302 and resp.headers["location"] == TRACKED[0]
    assert _clicks(instance, msg.id) == []


def test_click_tracking_settings_in_the_api(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url + "/api/v1", headers=AUTH) as api:
        assert api.get("/settings").json()["click_tracking_enabled"] is False
        out = api.put("/settings", json={"tracking_enabled": True,
                                         "click_tracking_enabled": True}).json()
        assert out["click_tracking_enabled"] is True
        box = api.post("/mailboxes", json={"address": "a@example.com"}).json()
        assert (box["click_tracking"], box["effective_click_tracking"]) == ("global", True)
        changed = api.patch(f"/mailboxes/{box['id']}",
                            json={"click_tracking": "disabled"}).json()
        assert changed["effective_click_tracking"] is False
        bad = api.patch(f"/mailboxes/{box['id']}", json={"click_tracking": "sometimes"})
        assert bad.status_code == 422 and "click_tracking" in bad.text


def test_the_conversation_shows_each_recipient_s_clicks(web: WebClient,
                                                         instance: Instance) -> None:
    box = _box(instance)
    msg = _send(instance, box, ["erin@example.org", "frank@example.org"])
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    signer = instance.sender.click_signer
    assert signer is not None
    [first, second, *_] = [signer.check(t) for t in _tokens(instance, msg, "erin@example.org")]
    assert first is not None and second is not None
    at = datetime.now(UTC)

    def click(ref: ClickRef, ua: str, minutes: int) -> ClickIn:
        return ClickIn(0, 0, at + timedelta(minutes=minutes), "GET", "198.51.100.7", ua,
                       copy_key=ref.copy_key, link=ref.link, url=ref.url)

    writer = instance.store.click_writer()
    try:
        record_clicks(writer, [click(first, "Barracuda scanner", 0)],
                      lambda c, sent: (Judged("machine", "security scanner", "Barracuda"),
                                       None))
        record_clicks(writer, [click(first, CHROME, 1), click(second, CHROME, 5)],
                      lambda c, sent: (Judged("human", "followed the link", "Chrome 131"),
                                       None))
    finally:
        writer.close()
    web.sign_in(instance.accounts.create_user("admin@example.com", PASSWORD,
                                              role="admin").email)
    page = web.get(f"/conversations/{msg.conversation_id}")
    rows = {r.th.contents[0].strip(): r for r in page.all("table.recipients tbody tr")}
    erin, frank = rows["erin@example.org"], rows["frank@example.org"]
    assert erin.select_one(".clicks .count").text == "2"
    assert erin.select_one(".clicks .link").text == "shop.example.com/terms"
    assert frank.select_one(".clicks .count").text == "0"
    clicks = page.all(".clicks-box .click")
    assert [c.select_one(".verdict").text for c in clicks] == [
        "Automated click", "Clicked", "Clicked"]
    assert clicks[1].select_one(".who").text == "erin@example.org"
    assert clicks[1].select_one("a.link")["href"] == TRACKED[0]
    # the first human click stood for a view of erin's copy; the scanner's did not
    assert instance.store.get_message(msg.id).view_count == 1


def test_click_tracking_settings_in_the_web_app(web: WebClient, instance: Instance) -> None:
    web.sign_in(instance.accounts.create_user("admin@example.com", PASSWORD,
                                              role="admin").email)
    page = web.get("/settings")
    assert "Click tracking" in page.text("#click_tracking")
    web.submit(page, "/settings", tracking="on", click_tracking="on")
    assert instance.mailboxes.global_clicks() is True
    # a form without the field leaves it alone
    web.client.post("/settings", data={"tracking": "on", "csrf": page.form("/settings")["csrf"]})
    assert instance.mailboxes.global_clicks() is True
    box = _box(instance, click_tracking="global")
    action = f"/settings/mailboxes/{box.id}?tab=misc"
    page = web.get(action)
    labels = [" ".join(lbl.get_text(" ").split()) for lbl in page.all("#click_tracking label")]
    assert labels == ["Use global setting (currently on)", "Enabled", "Disabled"]
    web.submit(page, action, click_tracking="disabled")
    assert instance.store.get_mailbox(box.id).click_tracking == "disabled"
    audit = [(c.scope, c.setting) for c in instance.store.setting_changes()]
    assert ("global", "click_tracking") in audit
    assert ("sales@example.com", "click_tracking") in audit


def test_click_tracking_in_the_cli(cli: Cli, instance: Instance) -> None:
    assert ok(cli("settings", "clicks", "on")) == "click tracking: on\n"
    assert "click tracking: on" in ok(cli("settings", "show"))
    box = json.loads(ok(cli("mailbox", "add", "sales@example.com", "--tracking", "enabled",
                            "--click-tracking", "disabled")))
    assert (box["click_tracking"], box["effective_click_tracking"]) == ("disabled", False)
    assert "click-tracking" in error(cli("mailbox", "set", "sales@example.com",
                                         "--click-tracking", "sometimes"), 2)
    ok(cli("mailbox", "set", "sales@example.com", "--click-tracking", "global"))
    msg = _send(instance, instance.store.find_mailbox("sales@example.com"),
                ["erin@example.org"])
    shown = json.loads(ok(cli("message", "show", str(msg.id))))
    assert shown["clicks_tracked"] is True and shown["clicks"] == []


def test_clicks_are_in_a_person_s_export_purged_with_age_and_erased(
        instance: Instance) -> None:
    box = _box(instance)
    msg = _send(instance, box, ["erin@example.org"])
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    signer = instance.sender.click_signer
    assert signer is not None
    ref = signer.check(_tokens(instance, msg, "erin@example.org")[0])
    assert ref is not None
    writer = instance.store.click_writer()
    at = datetime.now(UTC)
    try:
        for minutes in (0, 10):
            record_clicks(writer, [ClickIn(0, 0, at + timedelta(minutes=minutes), "GET",
                                           "198.51.100.7", CHROME, copy_key=ref.copy_key,
                                           link=ref.link, url=ref.url)],
                          lambda c, sent: (Judged("human", "followed the link", "Chrome"),
                                           None))
    finally:
        writer.close()
    exported = instance.privacy.export(None, "erin@example.org")["clicks"]
    assert [(k["url"], k["ip"]) for k in exported] == [(TRACKED[0], "198.51.100.7")] * 2
    # the retention purge clears who clicked, and keeps the link and the count
    assert instance.store.purge_click_details(at + timedelta(minutes=5)) == 1
    [old, new] = instance.store.list_clicks(msg.id)
    assert (old.ip, old.user_agent, old.copy_id, old.url) == (None, None, None, TRACKED[0])
    assert new.ip == "198.51.100.7"
    erased = instance.privacy.erase(None, "erin@example.org")
    assert erased.removed["clicks"] == 1
    assert [k.ip for k in instance.store.list_clicks(msg.id)] == [None]


def test_a_click_changes_the_live_conversation_page(instance: Instance) -> None:
    box = _box(instance)
    msg = _send(instance, box, ["erin@example.org"])
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    before = instance.store.conversation_digest(msg.conversation_id or 0)
    signer = instance.sender.click_signer
    assert signer is not None
    ref = signer.check(_tokens(instance, msg, "erin@example.org")[0])
    assert ref is not None
    writer = instance.store.click_writer()
    try:
        record_clicks(writer, [ClickIn(0, 0, datetime.now(UTC), "HEAD", "198.51.100.7", CHROME,
                                       copy_key=ref.copy_key, link=ref.link, url=ref.url)],
                      lambda c, sent: (Judged("machine", "HEAD request", "Chrome"), None))
    finally:
        writer.close()
    assert instance.store.conversation_digest(msg.conversation_id or 0) != before


def test_the_tag_filter_rewrites_links_only_in_one_recipient_s_copy(
        instance: Instance) -> None:
    box = _box(instance)
    raw = EmailMessage()
    raw["From"] = box.address
    raw["To"] = "erin@example.org, frank@example.org"
    raw["Subject"] = "Offer"
    raw["Message-ID"] = "<tag-1@example.com>"
    raw.set_content("Our offer\n")
    raw.add_alternative(HTML, subtype="html")
    data = raw.as_bytes(policy=email.policy.SMTP)
    found, shared = instance.sender.tag(box, data)
    assert found.clicks_tracked
    assert "/c/" not in html_of(shared)  # a pixel every recipient shares names nobody
    _, erin = instance.sender.tag(box, data, "erin@example.org")
    assert len(CLICK.findall(html_of(erin))) == len(TRACKED) + 1  # no List-Unsubscribe here


def test_a_burst_found_later_takes_back_the_view_its_first_click_implied(
        instance: Instance) -> None:
    box = _box(instance)
    msg = _send(instance, box, ["erin@example.org"])
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    signer = instance.sender.click_signer
    assert signer is not None
    refs = [signer.check(t) for t in _tokens(instance, msg, "erin@example.org")]
    judge = ClickJudge()
    at = datetime.now(UTC)
    writer = instance.store.click_writer()
    try:
        # A gateway's late rescan: the first link alone, in one batch (a person, so far) ...
        for n, ref in enumerate(refs):
            assert ref is not None
            record_clicks(writer, [ClickIn(0, 0, at + timedelta(milliseconds=200 * n), "GET",
                                           "203.0.113.50", CHROME, copy_key=ref.copy_key,
                                           link=ref.link, url=ref.url)], judge)
            if n == 0:
                assert instance.store.get_message(msg.id).view_count == 1
    finally:
        writer.close()
    # ... then the other links within two seconds: all machine, the view taken back.
    assert {v for _, v, _, _ in _clicks(instance, msg.id)} == {"machine"}
    after = instance.store.get_message(msg.id)
    assert (after.view_count, after.machine_count, after.viewed_copies) == (0, 1, 0)
    assert after.first_viewed_at is None
    [copy] = instance.store.copies_of([msg.id])[msg.id]
    assert (copy.view_count, copy.machine_count, copy.last_viewed_at) == (0, 1, None)
