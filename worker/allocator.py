"""How the worker's C allocator keeps memory between batches (glibc's ``mallopt``)."""

from __future__ import annotations

import ctypes
import os

# Freed memory glibc keeps at the top of the heap: a few batches of whole bodies.
MALLOC_TOP_PAD_BYTES = 32 * 1024 * 1024
_M_TOP_PAD = -2  # glibc's ``mallopt`` parameter number (malloc.h)


def tune_allocator() -> bool:
    """Keep freed heap memory for the next batch instead of handing it back at once.

    A batch of whole bodies allocates and frees megabytes: every recipient's
    rendered parts and the request body. With glibc's default padding the heap
    top is trimmed as soon as a batch lets go of them, and the next batch
    faults every page in again, which costs more than rendering them. Kept, the
    memory is reused; the sender's RSS grows by at most the padding.
    ``MALLOC_TOP_PAD_`` in the environment wins. Returns whether it was applied
    (False on a C library without ``mallopt``, e.g. macOS).
    """
    if "MALLOC_TOP_PAD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_TOP_PAD, MALLOC_TOP_PAD_BYTES))
