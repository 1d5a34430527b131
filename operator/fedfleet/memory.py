"""Process-wide allocator settings for the bulk streams (glibc; elsewhere nothing changes).

gRPC hands every received message over as a fresh `bytes` object, and the sender builds one per
chunk. glibc's defaults serve a block of a chunk's size from its own `mmap` or hand the top of
the heap back to the kernel when it is freed, so the next message lands in fresh pages: one
page fault per 4 KiB, every chunk (measured on loopback: 0.5 M faults for 2 GiB received, about
a third of the receiver's CPU). Fixed thresholds keep message-sized blocks in the heap for
reuse; at most `TRIM_MESSAGES` messages' worth of free memory at the top of the heap stays with
the process (glibc trims per arena, and there is one: see below). Freed blocks below the top
are reused, not returned, with these settings or without: the process's RSS moves by up to a
couple of hundred MB between measurements under a stream of large messages, without growing
with their number.

All threads share the main arena (`ARENAS`). gRPC's event-engine threads, which read the socket
into buffers, otherwise get arenas of their own: heaps of at most 64 MiB that glibc unmaps
whole once they are free, whatever the trim threshold, so the next buffers land in fresh pages
again. In a plain 10 x 1e7 round that was half of all CPU time (kernel `clear_page_erms` under
the event-engine threads' `recvmsg` and `malloc`), against a few percent with one arena.
Once a second arena exists glibc hands it to later threads even at a limit of 1, so this runs
before any thread allocates: first thing in `cli.main`, before the lifeline thread starts.
"""

from __future__ import annotations

import ctypes

from fedfleet.chunks import MAX_MESSAGE_BYTES

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters
MMAP_MESSAGES = 2  # blocks up to two messages come from the heap, larger ones (models) from mmap
TRIM_MESSAGES = 8  # free heap above this many messages goes back to the kernel
ARENAS = 1  # every thread allocates from the main arena, whose free top the trim threshold keeps


def reuse_message_buffers() -> bool:
    """Keep message-sized blocks in the heap. True where the C library took the settings."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # this process's C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap: int = mallopt(M_MMAP_THRESHOLD, MMAP_MESSAGES * MAX_MESSAGE_BYTES)
    trim: int = mallopt(M_TRIM_THRESHOLD, TRIM_MESSAGES * MAX_MESSAGE_BYTES)
    arenas: int = mallopt(M_ARENA_MAX, ARENAS)
    return mmap == 1 and trim == 1 and arenas == 1
