"""How the worker's C allocator keeps memory between batches (glibc's ``mallopt``)."""

from __future__ import annotations

import ctypes
import os

# Freed memory glibc keeps at the top of the heap: a few batches of whole bodies.
MALLOC_TOP_PAD_BYTES = 32 * 1024 * 1024
# Blocks from this size up get a mapping of their own; below it, they come from the heap.
# glibc's largest (``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit): a batch's request body
# (megabytes) and every copy made of it on its way to the socket stay on the heap.
MALLOC_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
_M_TOP_PAD = -2  # glibc's ``mallopt`` parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Keep freed heap memory for the next batch instead of handing it back at once.

    A batch of whole bodies allocates and frees megabytes: every recipient's
    rendered parts and the request body. With glibc's default padding the heap
    top is trimmed as soon as a batch lets go of them, and the next batch
    faults every page in again, which costs more than rendering them. Kept, the
    memory is reused; the sender's RSS grows by at most the padding.

    Setting the padding also freezes glibc's mmap threshold at 128 KB (it
    otherwise rises to the largest block freed), so a request body larger than
    what is left at the heap top would get a fresh mapping, faulted in page by
    page and unmapped when freed, at every copy and every batch. The threshold
    is raised with it, so those blocks reuse heap memory too.

    ``MALLOC_TOP_PAD_`` or ``MALLOC_MMAP_THRESHOLD_`` in the environment wins for
    that setting. Returns whether the padding was applied (False on a C library
    without ``mallopt``, e.g. macOS).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES)
    if "MALLOC_TOP_PAD_" in os.environ:
        return False
    return bool(mallopt(_M_TOP_PAD, MALLOC_TOP_PAD_BYTES))
