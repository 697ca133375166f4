"""Reports: the aggregate queries on a known history, and the page's charts with the numbers
in their text alternatives, scoped to the mailboxes the user may see."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from mailseen.records import Judged, MailboxIn, MailboxRecord, MessageRecord, ViewIn
from mailseen.services.instance import Instance
from mailseen.storage.models import Message

from .web_client import PASSWORD, Page, WebClient

RAW = (b"From: a@example.com\r\nTo: customer@example.org\r\nSubject: Offer\r\n"
       b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hi</p></body></html>\r\n")
NOW = datetime.now(UTC)
TODAY = NOW.replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
def web(instance: Instance) -> Iterator[WebClient]:
    # Still argon2id, at a cost that keeps sign-ins quick.
    with WebClient(instance) as client:
        yield client


@pytest.fixture
def boxes(instance: Instance) -> tuple[MailboxRecord, MailboxRecord]:
    instance.mailboxes.set_global_tracking(None, True)
    return (instance.store.add_mailbox(MailboxIn(address="support@example.com",
                                                 display_name="Support")),
            instance.store.add_mailbox(MailboxIn(address="sales@example.com",
                                                 display_name="Sales")))


def sign_in(web: WebClient, email: str) -> None:
    page = web.get("/login?next=/reports")
    assert web.submit(page, "/login", email=email, password=PASSWORD).status == 200


def sent(instance: Instance, box: MailboxRecord, days_ago: float, *, tracked: bool = True,
         status: str = "sent") -> MessageRecord:
    """A message sent ``days_ago`` (its row moved back in time)."""
    mode = "global" if tracked else "disabled"
    msg = instance.sender.submit(replace(box, tracking=mode), RAW, queue=False)
    at = NOW - timedelta(days=days_ago)
    with instance.db.session() as s, s.begin():
        s.execute(update(Message).where(Message.id == msg.id)
                  .values(created_at=at, sent_at=at, status=status))
    return instance.store.get_message(msg.id)


def view(instance: Instance, msg: MessageRecord, after: timedelta, *,
         machine: bool = False) -> None:
    assert msg.sent_at is not None
    verdict = Judged("machine", "security scanner", "Scanner") if machine else Judged(
        "human", "mail client", "Thunderbird")
    instance.store.record_views([ViewIn(msg.id, 0, msg.sent_at + after, "GET", None, None)],
                                [verdict])


def history(instance: Instance, support: MailboxRecord, sales: MailboxRecord) -> None:
    """Support: 5 tracked messages (4 seen, at 4 different delays), 1 untracked, 1 failed,
    1 sent long ago; Sales: 1 tracked and viewed twice, on one day."""
    delays = [timedelta(minutes=10), timedelta(hours=3), timedelta(hours=30),
              timedelta(days=4)]
    for delay in delays:
        view(instance, sent(instance, support, 5), delay)
    waiting = sent(instance, support, 2)
    view(instance, waiting, timedelta(seconds=5), machine=True)  # never counts
    sent(instance, support, 1, tracked=False)
    sent(instance, support, 1, status="failed")
    view(instance, sent(instance, support, 60), timedelta(minutes=1))  # before the period
    hit = sent(instance, sales, 3)
    view(instance, hit, timedelta(minutes=30))
    view(instance, hit, timedelta(minutes=50))


# -- the queries ------------------------------------------------------------------------

def test_report_counts_seen_messages_views_per_day_and_delays(
        instance: Instance, boxes: tuple[MailboxRecord, MailboxRecord]) -> None:
    support, sales = boxes
    history(instance, support, sales)
    report = instance.store.report([support.id], TODAY - timedelta(days=29), 30)
    assert (report.sent, report.tracked, report.viewed) == (6, 5, 4)
    assert report.first_view_buckets == [1, 1, 0, 1, 1]
    assert report.machine_fetches == 1
    assert len(report.views_per_day) == 30
    assert report.views_per_day[0][0] == (TODAY - timedelta(days=29)).date()
    assert report.views_per_day[-1][0] == TODAY.date()
    per_day = {d: n for d, n in report.views_per_day if n}
    expected: dict[object, int] = {}
    for delay in [timedelta(minutes=10), timedelta(hours=3), timedelta(hours=30),
                  timedelta(days=4)]:
        day = (NOW - timedelta(days=5) + delay).date()
        expected[day] = expected.get(day, 0) + 1
    assert per_day == expected

    both = instance.store.report([support.id, sales.id], TODAY - timedelta(days=29), 30)
    assert (both.tracked, both.viewed) == (6, 5)
    assert [(b.mailbox_id, b.tracked, b.viewed) for b in both.by_mailbox] == [
        (support.id, 5, 4), (sales.id, 1, 1)]
    assert sum(n for _, n in both.views_per_day) == 6
    assert both.first_view_buckets == [2, 1, 0, 1, 1]  # Sales' message counted once


def test_a_reply_counts_as_seen_at_the_time_it_came(
        instance: Instance, boxes: tuple[MailboxRecord, MailboxRecord]) -> None:
    support, _ = boxes
    msg = sent(instance, support, 0.5)
    with instance.db.session() as s, s.begin():
        s.execute(update(Message).where(Message.id == msg.id)
                  .values(replied_at=NOW - timedelta(days=0.5) + timedelta(hours=2)))
    report = instance.store.report([support.id], TODAY - timedelta(days=6), 7)
    assert (report.tracked, report.viewed) == (1, 1)
    assert report.first_view_buckets == [0, 1, 0, 0, 0]
    assert sum(n for _, n in report.views_per_day) == 0  # a reply is not a pixel view


def test_no_mailboxes_make_an_empty_report(instance: Instance) -> None:
    report = instance.store.report([], TODAY - timedelta(days=6), 7)
    assert (report.sent, report.tracked, report.viewed) == (0, 0, 0)
    assert [n for _, n in report.views_per_day] == [0] * 7


# -- the page ---------------------------------------------------------------------------

def _chart(page: Page, heading: str) -> str:
    [svg] = [s for s in page.all("figure svg[role=img]")
             if s.find_parent("figure").find("h2").get_text() == heading]
    assert svg.find("title").get_text() == svg["aria-label"]
    return str(svg["aria-label"])


def test_overall_report_draws_three_charts_with_their_numbers(
        web: WebClient, instance: Instance, boxes: tuple[MailboxRecord, MailboxRecord]) -> None:
    support, sales = boxes
    history(instance, support, sales)
    instance.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    sign_in(web, "ada@example.com")
    page = web.get("/reports")
    assert page.status == 200
    assert page.text("h1") == "Reports: All your mailboxes"
    assert _chart(page, "Share of tracked messages viewed") == (
        "5 of 6 tracked messages viewed (83%), 1 not viewed yet. "
        "1 more sent message was not tracked.")
    assert _chart(page, "Time from sending to first view") == (
        "Time from sending to first view, for 5 viewed messages: under 1 hour 2, "
        "1 to 6 hours 1, 6 to 24 hours 0, 1 to 3 days 1, over 3 days 1.")
    days = _chart(page, "Views per day")
    assert days.startswith("6 views by people from ")
    bars = page.soup.find("h2", string="Views per day").find_parent("figure").select("rect")
    assert len(bars) == 30
    assert "1 fetch by machines" in page.text("#days-h ~ figcaption")
    rows = [" ".join(li.get_text(" ").split()) for li in page.all(".hbars li")]
    assert rows == ["Sales 1 of 1 (100%)", "Support 4 of 5 (80%)"]
    assert page.form("/reports") == {"mailbox": "", "days": "30"}


def test_a_mailbox_report_over_a_chosen_period(
        web: WebClient, instance: Instance, boxes: tuple[MailboxRecord, MailboxRecord]) -> None:
    support, sales = boxes
    history(instance, support, sales)
    instance.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    sign_in(web, "ada@example.com")
    page = web.get(f"/reports?mailbox={sales.id}&days=7")
    assert page.text("h1") == "Reports: Sales"
    assert page.form("/reports") == {"mailbox": str(sales.id), "days": "7"}
    assert _chart(page, "Share of tracked messages viewed").startswith(
        "1 of 1 tracked messages viewed (100%)")
    bars = page.soup.find("h2", string="Views per day").find_parent("figure").select("rect")
    assert len(bars) == 7
    assert [b.find("title").get_text().split(": ")[1] for b in bars].count("2") == 1
    assert page.all(".hbars") == []  # one mailbox: no comparison
    # A period that is not offered falls back to 30 days.
    assert web.get(f"/reports?mailbox={sales.id}&days=5").form("/reports")["days"] == "30"
    assert web.get("/reports?days=lots").status == 200


def test_a_member_sees_only_their_mailboxes_in_reports(
        web: WebClient, instance: Instance, boxes: tuple[MailboxRecord, MailboxRecord]) -> None:
    support, sales = boxes
    history(instance, support, sales)
    member = instance.accounts.create_user("max@example.com", PASSWORD)
    instance.store.set_memberships(member.id, [sales.id])
    sign_in(web, "max@example.com")
    page = web.get("/reports")
    assert _chart(page, "Share of tracked messages viewed").startswith(
        "1 of 1 tracked messages viewed")
    options = [o.get_text() for o in page.all("#mailbox option")]
    assert options == ["All your mailboxes", "Sales"]
    assert "Support" not in page.response.text
    for url in [f"/reports?mailbox={support.id}", "/reports?mailbox=999",
                "/reports?mailbox=x"]:
        refused = web.get(url)
        assert refused.status == 404, url
        assert "support@example.com" not in refused.response.text


def test_without_mailboxes_the_report_says_so(web: WebClient, instance: Instance) -> None:
    instance.accounts.create_user("max@example.com", PASSWORD)
    sign_in(web, "max@example.com")
    page = web.get("/reports")
    assert page.status == 200
    assert "no mailboxes yet" in page.text(".empty")
    assert page.all("figure svg[role=img]") == []


def test_reports_need_a_signed_in_user(web: WebClient) -> None:
    assert web.get("/reports").response.url.path in ("/login", "/setup")
