"""Keep freed memory in the process for reuse (glibc malloc), so big buffers stop faulting.

Every Predict of 32 images at 224x224 allocates a few 6.4 MB buffers (the received message,
TensorFlow's input tensor). glibc serves blocks that big with a fresh ``mmap`` and gives them
back to the kernel on ``free``, so the next request touches new pages: 1,568 page faults per
buffer, which on a VM cost more than copying the bytes (BENCHMARKS.md, Serving: 3,147 faults
and about 6 ms per call on the 16-core machine). TF Serving avoids this with tcmalloc; here
:func:`keep_freed_memory` raises glibc's thresholds so such blocks come from, and go back to,
the heap. The price is memory: up to ``max_block_bytes``-sized blocks per thread arena stay
with the process after a burst of large requests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit systems).
MAX_BLOCK_BYTES = 32 * 2**20


def keep_freed_memory(
    max_block_bytes: int = MAX_BLOCK_BYTES, trim_bytes: int = 512 * 2**20
) -> bool:
    """Serve blocks up to ``max_block_bytes`` from the heap and keep up to ``trim_bytes`` of
    free memory at its top. Returns False (and changes nothing) where the C library has no
    ``mallopt`` (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        log.info("malloc tuning skipped: this C library has no mallopt")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_THRESHOLD, min(max_block_bytes, MAX_BLOCK_BYTES)))
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_bytes)) and ok
