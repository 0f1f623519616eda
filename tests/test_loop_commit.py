"""Group commit on the event loop: one durable write per loop turn, shared by its requests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from decisionloop.engine.service import DecisionService
from decisionloop.errors import StorageError
from decisionloop.storage.loop_commit import LoopGroupCommit
from decisionloop.storage.memory import MemorySourceLog
from decisionloop.storage.ports import Record
from tests.conftest import transaction
from tests.test_source_conformance import record


class CountingLog(MemorySourceLog):
    """Records each ``write`` call (the commits), or fails them on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[str]] = []
        self.fail = False

    def write(self, records: Sequence[Record]) -> None:
        if self.fail:
            raise StorageError("disk full")
        self.writes.append([r.event_id for r in records])
        super().write(records)


def test_the_requests_of_one_loop_turn_share_one_write() -> None:
    source = CountingLog()
    commit = LoopGroupCommit(source)

    async def main() -> None:
        first = [commit.commit([record(i, i)]) for i in range(3)]  # one turn
        assert source.writes == []  # nothing is written before the turn ends
        await asyncio.gather(*first)
        assert source.writes == [["e0", "e1", "e2"]]
        await commit.commit([record(3, 3)])  # a later turn: its own write
        assert source.writes == [["e0", "e1", "e2"], ["e3"]]

    asyncio.run(main())
    assert source.count() == 4


def test_a_failed_write_fails_every_waiter_of_its_turn_and_not_the_next() -> None:
    source = CountingLog()
    commit = LoopGroupCommit(source)

    async def main() -> None:
        source.fail = True
        results = await asyncio.gather(
            *(commit.commit([record(i, i)]) for i in range(2)), return_exceptions=True
        )
        assert [type(r) for r in results] == [StorageError, StorageError]
        source.fail = False
        await commit.commit([record(5, 5)])

    asyncio.run(main())
    assert list(source.event_ids()) == ["e5"]


def counted(service: DecisionService) -> CountingLog:
    """The service (fresh, nothing stored) now stores into a CountingLog."""
    service.source.close()
    source = service.source = CountingLog()
    service._group_commit = LoopGroupCommit(source)
    return source


def test_concurrent_decide_requests_are_made_durable_together(service: DecisionService) -> None:
    source = counted(service)

    async def main() -> list[Any]:
        requests = [service.handle([transaction(f"c{i}")], "decide", batch=False) for i in range(5)]
        return await asyncio.gather(*requests)

    answers = asyncio.run(main())
    assert [a[0]["event_id"] for a in answers] == [f"c{i}" for i in range(5)]
    assert source.writes == [[f"c{i}" for i in range(5)]]  # one commit, before any answer
    assert {source.decision_for_event(f"c{i}")["outcome"] for i in range(5)} <= {  # type: ignore[index]
        "approve",
        "challenge",
        "review",
        "decline",
    }


def test_a_storage_failure_answers_an_error_and_the_event_can_be_sent_again(
    service: DecisionService,
) -> None:
    source = counted(service)
    source.fail = True
    with pytest.raises(StorageError):
        asyncio.run(service.handle([transaction("f1")], "decide", batch=False))
    source.fail = False
    answer = asyncio.run(service.handle([transaction("f1")], "decide", batch=False))
    assert answer[0]["event_id"] == "f1"
    assert source.writes == [["f1"]]


@pytest.mark.parametrize("cancelled", ["while waiting", "after the commit"])
def test_a_cancelled_request_is_stored_once_and_a_repeat_gets_its_decision(
    service: DecisionService, cancelled: str
) -> None:
    """The flush writes every waiter's records, a cancelled one's too: the event stays known,
    so a repeat gets the stored decision instead of a second one."""

    async def main() -> tuple[Any, Any]:
        task = asyncio.create_task(service.handle([transaction("x1")], "decide", batch=False))
        await asyncio.sleep(0)  # the request now waits for its commit
        if cancelled == "while waiting":
            task.cancel()
        else:  # after the flush has resolved the commit, before the task resumes
            asyncio.get_running_loop().call_soon(task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task
        return await service.handle([transaction("x1")], "decide", batch=False), None

    repeat, _ = asyncio.run(main())
    stored = [e.event_id for e in service.source.scan()]
    assert stored == ["x1"]
    assert repeat[0] == service.source.decision_for_event("x1")
