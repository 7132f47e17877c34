"""Fire-and-forget producing for the tracking hot paths, with a local spool.

The pixel and the redirect answer at once: ``emit`` hands the event to
librdkafka's in-memory queue and returns. When the broker does not confirm a
message within ``TRACKING_PRODUCE_TIMEOUT_MS`` (or the local queue is full),
the delivery callback appends it to a spool file under ``TRACKING_SPOOL_DIR``
(at most ``TRACKING_SPOOL_MAX_BYTES`` over all files; beyond that, events are
dropped and counted). A background thread replays spool files once the broker
confirms messages again; what fails again is spooled again, so nothing is lost
while the process lives and the disk has room.

Lost on purpose: events still in librdkafka's memory when the process is
killed hard (at most the last ``TRACKING_PRODUCE_TIMEOUT_MS`` of hits), and
events beyond the spool cap during a long outage. Spool files of a dead
process are replayed by the next process that uses the same directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import confluent_kafka
import orjson

from service.settings import Settings

log = logging.getLogger(__name__)


class Spool:
    """Append-only files of ``[topic, key, value]`` lines, bounded in total size."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self._dir = Path(directory)
        self._max = max_bytes
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._seq = 0
        self.dropped = 0
        self._dir.mkdir(parents=True, exist_ok=True)
        self._size = sum(p.stat().st_size for p in self._dir.glob("*.spool"))

    @property
    def size(self) -> int:
        return self._size

    def _active(self) -> Path:
        return self._dir / f"active-{self._pid}.spool"

    def append(self, topic: str, key: bytes | None, value: bytes) -> bool:
        line = orjson.dumps([topic, (key or b"").decode(), value.decode()]) + b"\n"
        with self._lock:
            if self._size + len(line) > self._max:
                self.dropped += 1
                return False
            with self._active().open("ab") as file:
                file.write(line)
            self._size += len(line)
        return True

    def claim(self) -> list[Path]:
        """Take this process's active file and any file left by a dead process."""
        claimed: list[Path] = []
        with self._lock:
            for path in sorted(self._dir.glob("*.spool")):
                owner = path.stem.split("-")[1] if "-" in path.stem else ""
                mine = owner == str(self._pid)
                if path.name.startswith("replay-") and not mine and _alive(owner):
                    continue
                if path.name.startswith("active-") and not mine and _alive(owner):
                    continue
                self._seq += 1
                target = self._dir / f"replay-{self._pid}-{self._seq}-{path.stem}.spool"
                with contextlib.suppress(FileNotFoundError):
                    path.rename(target)
                    claimed.append(target)
        return claimed

    def release(self, path: Path) -> None:
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                self._size -= path.stat().st_size
                path.unlink()
            self._size = max(self._size, 0)


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_spool(path: Path) -> list[tuple[str, str, bytes]]:
    messages = []
    for line in path.read_bytes().splitlines():
        try:
            topic, key, value = orjson.loads(line)
        except (orjson.JSONDecodeError, ValueError):
            continue  # a line torn by a crash
        messages.append((str(topic), str(key), str(value).encode()))
    return messages


class Emitter:
    """Produces without waiting; spools what the broker does not confirm."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._settings = settings
        self.spool = Spool(settings.tracking_spool_dir, settings.tracking_spool_max_bytes)
        self._producer = confluent_kafka.Producer(
            {
                **settings.kafka_config(),
                "enable.idempotence": True,
                "acks": "all",
                # The broker's cost goes with produce requests, not messages: at 10 ms
                # the broker took a sixth of a core at 1,800 hits/s, at 100 ms a third of
                # that. Nobody waits on these events; a tenth of a second is free.
                "linger.ms": 100,
                "compression.type": "lz4",
                "message.timeout.ms": settings.tracking_produce_timeout_ms,
                "queue.buffering.max.messages": 200_000,
                **overrides,
            }
        )
        self.confirmed = 0
        self._last_ok = 0.0
        self._last_error = 0.0
        self._running = True
        self._poller = threading.Thread(target=self._poll_loop, name="tracking-poll", daemon=True)
        self._replayer = threading.Thread(
            target=self._replay_loop, name="tracking-spool", daemon=True
        )
        self._poller.start()
        self._replayer.start()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.confirmed += 1
            self._last_ok = time.monotonic()
            return
        self._last_error = time.monotonic()
        if not self.spool.append(msg.topic(), msg.key(), msg.value()):
            log.error("tracking spool full: event dropped (%d so far)", self.spool.dropped)

    def emit(self, topic: str, key: str, value: bytes) -> None:
        """Queue one event; never blocks, never raises."""
        full = self._settings.topic(topic)
        try:
            self._producer.produce(full, value=value, key=key, on_delivery=self._on_delivery)
        except (BufferError, confluent_kafka.KafkaException):
            self._last_error = time.monotonic()
            self.spool.append(full, key.encode(), value)

    def _poll_loop(self) -> None:
        while self._running:
            self._producer.poll(0.1)

    def _replay_loop(self) -> None:
        while self._running:
            time.sleep(1.0)
            with contextlib.suppress(Exception):
                self.replay()

    def broker_healthy(self) -> bool:
        return self._last_ok >= self._last_error

    def replay(self, flush_timeout: float = 10.0) -> int:
        """Produce spooled events again; returns how many were handed to the producer."""
        if self.spool.size == 0 or not self._probe():
            return 0
        count = 0
        for path in self.spool.claim():
            for topic, key, value in read_spool(path):
                try:
                    self._producer.produce(
                        topic, value=value, key=key, on_delivery=self._on_delivery
                    )
                except (BufferError, confluent_kafka.KafkaException):
                    self.spool.append(topic, key.encode(), value)
                count += 1
            # What the broker refuses now comes back to the spool through the callback.
            self._producer.flush(flush_timeout)
            self.spool.release(path)
        if count:
            log.info("tracking spool: replayed %d events", count)
        return count

    def _probe(self) -> bool:
        if self.broker_healthy():
            return True
        try:
            self._producer.list_topics(timeout=2)
        except confluent_kafka.KafkaException:
            return False
        return True

    def flush(self, timeout: float = 10.0) -> int:
        remaining: int = self._producer.flush(timeout)
        return remaining

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._running = False
        self._poller.join(timeout=1)
        self._replayer.join(timeout=2)
