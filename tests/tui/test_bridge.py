"""The bridge posts the changed records in its message, one message per burst however many changes it holds."""

from __future__ import annotations

from gembatch.core.events import BatchChanged, EventBus, Level, LogLine
from gembatch.core.model import BatchRecord, Stage
from gembatch.tui.app import MonitorApp
from gembatch.tui.messages import BatchesChanged, EngineBridge, LogAdded
from textual.message import Message

from .conftest import wait_until
from .fake_engine import NOW, FakeEngine, frozen_clock, record


class Inbox:
    """A message target that keeps what it is sent, as the app's queue would until it gets to it."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def post_message(self, message: Message) -> bool:
        self.messages.append(message)
        return True


def test_a_burst_of_changes_is_one_message_carrying_the_latest_snapshot_of_each_batch() -> None:
    bus, inbox = EventBus(), Inbox()
    EngineBridge(bus, inbox)  # type: ignore[arg-type]
    for count in range(1, 11):
        for index in range(1, 101):
            rec = record(index, Stage.RUNNING)
            rec.succeeded_count = count
            bus.publish(BatchChanged(NOW, rec))

    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert isinstance(message, BatchesChanged)
    records = message.records
    assert [r.batch_id for r in records] == [record(i, Stage.RUNNING).batch_id for i in range(1, 101)]
    assert {r.succeeded_count for r in records} == {10}


def test_changes_after_the_records_were_read_go_into_a_new_message() -> None:
    bus, inbox = EventBus(), Inbox()
    EngineBridge(bus, inbox)  # type: ignore[arg-type]
    bus.publish(BatchChanged(NOW, record(1, Stage.PENDING)))
    bus.publish(BatchChanged(NOW, record(2, Stage.PENDING)))
    first = inbox.messages[0]
    assert isinstance(first, BatchesChanged)
    assert [r.batch_id for r in first.records] == [record(1, Stage.PENDING).batch_id, record(2, Stage.PENDING).batch_id]

    later = record(2, Stage.RUNNING)
    bus.publish(BatchChanged(NOW, later))
    bus.publish(LogLine(NOW, Level.INFO, "a line"))

    assert len(inbox.messages) == 3
    second, line = inbox.messages[1:]
    assert isinstance(second, BatchesChanged) and isinstance(line, LogAdded)
    assert second.records == [later]
    assert len(first.records) == 2  # the first message did not take the later change


def test_closing_the_bridge_stops_the_messages() -> None:
    bus, inbox = EventBus(), Inbox()
    bridge = EngineBridge(bus, inbox)  # type: ignore[arg-type]
    bridge.close()
    bus.publish(BatchChanged(NOW, record(1, Stage.PENDING)))
    assert inbox.messages == []


async def test_the_app_shows_the_records_its_message_carries() -> None:
    engine = FakeEngine()
    app = MonitorApp(engine, clock=frozen_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.grid.row_count == len(engine.records), 5, "the rows")
        applied: list[list[str]] = []
        original = app.grid.apply

        def counted(records: list[BatchRecord]) -> None:
            applied.append([r.batch_id for r in records])
            original(records)

        app.grid.apply = counted  # type: ignore[method-assign]
        changed = []
        for batch_id in list(engine.records)[:5]:
            rec = engine.records[batch_id].copy()
            rec.succeeded_count += 3
            changed.append(rec)
            engine.bus.publish(BatchChanged(NOW, rec))
        await wait_until(pilot, lambda: all(app.grid.model.records[r.batch_id].succeeded_count == r.succeeded_count
                                            for r in changed), 5, "the changes")
        assert applied == [[r.batch_id for r in changed]]  # one grid update for the five changes
