"""How the consume loop takes messages from the consumer's fetch queue.

The loop itself (offsets stored after the work, retries, drain) runs on the real
broker in ``tests/test_recovery.py`` and ``tests/test_replay.py``.
"""

from __future__ import annotations

from typing import Any

from worker.runner import _poll


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
