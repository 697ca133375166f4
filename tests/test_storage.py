"""Storage: migrations match the models, views and summaries stay consistent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mailseen.records import MailboxIn, ViewIn
from mailseen.services.instance import Instance
from mailseen.storage import Database
from mailseen.storage.models import Base


def test_migrations_match_the_models(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()  # idempotent on an up-to-date database
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    db.dispose()
    assert diff == []


def _message(inst: Instance) -> int:
    box = inst.store.add_mailbox(MailboxIn("a@example.com", tracking="enabled"))
    raw = b"From: a@example.com\r\nTo: b@example.org\r\nContent-Type: text/html\r\n\r\n<p>x</p>"
    return inst.sender.submit(box, raw).id


def _view(mid: int, at: datetime, ua: str = "UA") -> ViewIn:
    return ViewIn(message_id=mid, recipient=0, at=at, method="GET", ip="192.0.2.1",
                  user_agent=ua, headers={"accept": "image/*"})


def test_views_update_the_summary_in_the_same_transaction(instance: Instance) -> None:
    mid = _message(instance)
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert instance.store.record_views([_view(mid, t0 + timedelta(minutes=5)),
                                        _view(mid, t0)]) == 2
    # A later batch holding an earlier hit (another node) moves neither end the wrong way.
    instance.store.record_views([_view(mid, t0 - timedelta(minutes=1))])
    msg = instance.store.get_message(mid)
    assert msg.view_count == 3
    assert msg.first_viewed_at == t0
    assert msg.last_viewed_at == t0 + timedelta(minutes=5)
    assert [v.at for v in instance.store.list_views(mid)] == [
        t0 - timedelta(minutes=1), t0, t0 + timedelta(minutes=5)]


def test_views_of_unknown_messages_are_dropped_not_fatal(instance: Instance) -> None:
    mid = _message(instance)
    now = datetime.now(UTC)
    assert instance.store.record_views([_view(999_999, now), _view(mid, now)]) == 1
    assert instance.store.get_message(mid).view_count == 1


def test_a_writer_kept_between_batches_notices_a_deleted_message(instance: Instance) -> None:
    # The pixel's writer remembers sending times between batches; a message deleted
    # meanwhile must cost only its own views, not the batch.
    box = instance.store.add_mailbox(MailboxIn("w@example.com", tracking="enabled"))
    raw = b"From: w@example.com\r\nTo: b@example.org\r\nContent-Type: text/html\r\n\r\n<p>x</p>"
    gone, kept = (instance.sender.submit(box, raw, queue=False).id for _ in range(2))
    now = datetime.now(UTC)
    writer = instance.store.view_writer()
    try:
        assert writer.record([_view(gone, now), _view(kept, now)]) == 2
        with instance.db.engine.begin() as conn:
            conn.exec_driver_sql(f"DELETE FROM messages WHERE id = {gone}")
        assert writer.record([_view(gone, now), _view(kept, now)]) == 1
        assert writer.record([_view(kept, now)]) == 1
    finally:
        writer.close()
    assert instance.store.get_message(kept).view_count == 3
    assert [v.message_id for v in instance.store.list_views(gone)] == []


def test_a_batch_written_again_is_not_judged_again(instance: Instance) -> None:
    # The real judge remembers each client's recent hits: judging the batch again after the
    # deleted-message retry would call every view a repeat of itself.
    from mailseen.services.classification import Judge, record_judged

    box = instance.store.add_mailbox(MailboxIn("j@example.com", tracking="enabled"))
    raw = b"From: j@example.com\r\nTo: b@example.org\r\nContent-Type: text/html\r\n\r\n<p>x</p>"
    gone, kept = (instance.sender.submit(box, raw, queue=False).id for _ in range(2))
    later = datetime.now(UTC) + timedelta(hours=1)  # long after sending: people, not scanners
    chrome = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0.0.0 Safari/537.36")

    def hit(mid: int, ip: str) -> ViewIn:
        return ViewIn(mid, 0, later, "GET", ip, chrome, {"accept": "image/*"})

    writer = instance.store.view_writer()
    try:
        judge = Judge()
        assert record_judged(writer, [hit(gone, "192.0.2.10")], judge) == 1  # time cached
        with instance.db.engine.begin() as conn:
            conn.exec_driver_sql(f"DELETE FROM messages WHERE id = {gone}")
        assert record_judged(writer, [hit(gone, "192.0.2.11"), hit(kept, "192.0.2.12")],
                             judge) == 1
    finally:
        writer.close()
    [view] = instance.store.list_views(kept)
    assert (view.verdict, view.reason) == ("human", "opened in a browser (webmail)")
    assert instance.store.get_message(kept).view_count == 1


def test_a_writer_replaces_a_connection_that_died_while_idle(instance: Instance) -> None:
    mid = _message(instance)
    now = datetime.now(UTC)
    writer = instance.store.view_writer()
    try:
        assert writer.record([_view(mid, now)]) == 1
        held = writer._conn
        assert held is not None
        raw = held.connection.dbapi_connection
        if instance.db.is_sqlite:
            raw.close()  # type: ignore[union-attr]
        else:  # the server ends the session, as a restart or an idle timeout would
            pid = raw.info.backend_pid  # type: ignore[union-attr]
            with instance.db.engine.begin() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        writer.idle_reconnect = 0.0  # it has been idle "long enough"
        assert writer.record([_view(mid, now)]) == 1  # not lost
    finally:
        writer.close()
    assert instance.store.get_message(mid).view_count == 2


def test_times_come_back_as_aware_utc(instance: Instance) -> None:
    mid = _message(instance)
    msg = instance.store.get_message(mid)
    assert msg.created_at.tzinfo is UTC


def test_views_bind_times_exactly_as_the_orm_does(instance: Instance) -> None:
    """record_views binds times itself (for speed); they must equal what UTCDateTime binds,
    or SQLite's string comparisons of first/last view times would go wrong."""
    from datetime import timezone

    from mailseen.storage.models import UTCDateTime
    from mailseen.storage.views import _Writer

    dialect = instance.db.engine.dialect
    ours = _Writer(dialect).time
    orm = UTCDateTime().dialect_impl(dialect).bind_processor(dialect) or (lambda v: v)
    for value in (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                  datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
                  datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5))),
                  datetime.now(UTC)):
        assert ours(value) == orm(value), value

