"""How the consume loops take messages from the consumer's fetch queue, and which
offsets the concurrent loop stores.

The loop itself (offsets stored after the work, retries, drain) runs on the real
broker in ``tests/sending/test_recovery.py`` and ``tests/sending/test_replay.py``.
"""

from __future__ import annotations

from typing import Any, cast

import confluent_kafka

from worker.runner import _InOrderOffsets, _poll


class FetchQueue:
    """Stands in for a consumer with ``ready`` messages fetched; records each ``consume``."""

    def __init__(self, ready: int) -> None:
        self.ready = [f"message {n}" for n in range(ready)]
        self.calls: list[tuple[int, float]] = []

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.calls.append((num_messages, timeout))
        taken, self.ready = self.ready[:num_messages], self.ready[num_messages:]
        return taken


def test_a_filling_poll_asks_for_a_whole_batch() -> None:
    queue = FetchQueue(ready=3)

    assert len(_poll(queue, 16, 0.5, fill=True)) == 3  # type: ignore[arg-type]
    assert queue.calls == [(16, 0.5)]


def test_a_prompt_poll_waits_for_one_message_then_takes_what_has_arrived() -> None:
    queue = FetchQueue(ready=3)

    assert len(_poll(queue, 16, 0.5, fill=False)) == 3  # type: ignore[arg-type]
    assert queue.calls == [(1, 0.5), (15, 0)]


def test_a_prompt_poll_that_gets_nothing_asks_no_more() -> None:
    queue = FetchQueue(ready=0)

    assert _poll(queue, 16, 0.5, fill=False) == []  # type: ignore[arg-type]
    assert queue.calls == [(1, 0.5)]


class Message:
    """Stands in for a consumed message: where it was in its partition."""

    def __init__(self, partition: int, offset: int) -> None:
        self._where = ("campaign-batches.v1", partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


def message(partition: int, offset: int) -> confluent_kafka.Message:
    return cast(confluent_kafka.Message, Message(partition, offset))


def stored(offsets: _InOrderOffsets) -> list[tuple[int, int]]:
    return [(tp.partition, tp.offset) for tp in offsets.take()]


def test_a_partition_offset_moves_only_past_messages_that_are_all_done() -> None:
    offsets = _InOrderOffsets()
    first, second, third, elsewhere = message(0, 10), message(0, 11), message(0, 12), message(1, 5)
    for each in (first, second, third, elsewhere):
        offsets.add(each)

    offsets.done(third)
    offsets.done(elsewhere)
    assert stored(offsets) == [(1, 6)]  # partition 0 waits for offset 10

    offsets.done(first)
    assert stored(offsets) == [(0, 11)]  # 11 is still running
    offsets.done(second)
    assert stored(offsets) == [(0, 13)]
    assert stored(offsets) == []  # nothing new


def test_a_message_that_comes_again_never_moves_the_offset_back() -> None:
    offsets = _InOrderOffsets()
    for n in (10, 11):
        offsets.add(message(0, n))
        offsets.done(message(0, n))
    assert stored(offsets) == [(0, 12)]

    # The partition went away before the commit and came back from offset 10.
    offsets.add(message(0, 10))
    offsets.add(message(0, 11))
    offsets.add(message(0, 12))
    offsets.done(message(0, 10))
    assert stored(offsets) == []
    offsets.done(message(0, 12))
    offsets.done(message(0, 11))
    assert stored(offsets) == [(0, 13)]
