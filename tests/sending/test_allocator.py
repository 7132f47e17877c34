"""The worker keeps freed heap memory for the next batch (``worker.allocator``).

Each probe runs in a process of its own: the allocator's setting lasts as long
as the process. Page faults are counted, not time: they say whether the memory
a batch freed came back to the next one, whatever else runs on the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import resource, sys
from worker.allocator import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tuned" else False

def batch() -> int:
    # A batch of 200 rendered 24 KB parts, then the request body joined from them.
    parts = [b"x" * 24_000 for _ in range(200)]
    return len(b"".join(parts))

batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    batch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

# Eight request bodies of 4.8 MB alive at once, as with batches in flight: more
# than the heap top keeps, so each new body needs memory the heap does not have.
IN_FLIGHT_PROBE = """
import collections, resource, sys
from worker.allocator import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tuned" else False
in_flight = collections.deque(maxlen=8)

def batch() -> None:
    parts = [b"x" * 24_000 for _ in range(200)]
    in_flight.append(b"".join(parts))

for _ in range(10):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    batch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

ROOT = Path(__file__).resolve().parents[2]
_ALLOCATOR_ENV = ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_")


def _probe(mode: str, probe: str = PROBE, **env: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k not in _ALLOCATOR_ENV}
    environment.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", probe, mode],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return out[0], int(out[1])


def test_batches_after_the_first_reuse_the_memory_instead_of_faulting_it_in_again() -> None:
    applied, tuned_faults = _probe("tuned")
    _, default_faults = _probe("default")
    assert applied == "True"
    # 20 batches of about 10 MB: by default each one maps most of its pages anew.
    assert default_faults > 500
    assert tuned_faults < default_faults / 10


def test_malloc_top_pad_in_the_environment_wins() -> None:
    applied, _ = _probe("tuned", MALLOC_TOP_PAD_="131072")
    assert applied == "False"


def test_request_bodies_beyond_the_heap_top_reuse_freed_memory_instead_of_new_mappings() -> None:
    _, tuned_faults = _probe("tuned", IN_FLIGHT_PROBE)
    # glibc's own threshold, as the padding alone left it: each body a mapping of its own.
    _, mapped_faults = _probe("tuned", IN_FLIGHT_PROBE, MALLOC_MMAP_THRESHOLD_="131072")
    # 20 bodies of 4.8 MB are about 23,000 pages.
    assert mapped_faults > 5_000
    assert tuned_faults < mapped_faults / 4
