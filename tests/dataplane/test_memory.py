"""Message-sized buffers are reused, not faulted in afresh for every chunk (`fedfleet.memory`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
CHUNK = 2 * 1024 * 1024
# Long enough that the faults which scale with bytes dominate those which do not: glibc's own
# mmap-threshold adaptation and the gRPC threads' first buffers fault a few thousand pages per
# run either way (measured), where fresh pages per chunk are 0.4-1.2 faults per page streamed.
CHUNKS = 768
# One process streams CHUNKS messages of 2 MiB to itself over loopback gRPC (a server that
# drops each message, as a receiver does once it has folded a chunk) and prints its page faults.
FAULTS_OF_A_STREAM = r"""
import asyncio, resource, sys, grpc
from fedfleet.chunks import GRPC_OPTIONS
from fedfleet.memory import reuse_message_buffers
if sys.argv[1] == "tuned":
    assert reuse_message_buffers()
chunk, chunks = int(sys.argv[2]), int(sys.argv[3])
async def sink(requests, context):
    count = 0
    async for message in requests:
        count += len(message)
    return count.to_bytes(8, "big")
async def main():
    server = grpc.aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {
        "Up": grpc.stream_unary_rpc_method_handler(sink)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS) as channel:
        up = channel.stream_unary("/t.T/Up")
        async def messages(n):
            for i in range(n):
                yield bytes([i % 256]) * chunk  # a new message each time, as a sender builds them
        await up(messages(8))  # warm-up: connection, window, the first allocations
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        received = int.from_bytes(await up(messages(chunks)), "big")
        assert received == chunk * chunks
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    await server.stop(None)
asyncio.run(main())
"""


def faults_for(mode: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_A_STREAM, mode, str(CHUNK), str(CHUNKS)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(OPERATOR)},
        timeout=120,
    )
    return int(run.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_streamed_chunks_land_in_reused_memory_not_fresh_pages() -> None:
    pages = CHUNK * CHUNKS // 4096
    default, tuned = faults_for("default"), faults_for("tuned")
    # Measured under load on 2 cores: tuned 1.9-17 k faults, default 154-482 k, of 393 k pages.
    assert tuned < pages // 8 < default, (default, tuned)


# Threads allocate message-sized blocks, as gRPC's event-engine threads do for what they read;
# then glibc reports its arenas (malloc_info's XML has one <heap> per arena).
ARENAS_OF_THREADS = r"""
import ctypes, sys, threading
from fedfleet.memory import reuse_message_buffers
if sys.argv[1] == "tuned":
    assert reuse_message_buffers()
def allocate():
    kept = [bytearray(64 * 1024) for _ in range(64)]  # below both mmap thresholds: arena memory
    del kept
threads = [threading.Thread(target=allocate) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
stream = libc.fopen(sys.argv[2].encode(), b"w")
assert libc.malloc_info(0, stream) == 0
libc.fclose(stream)
"""


def arenas_for(mode: str, tmp_path: Path) -> int:
    report = tmp_path / f"{mode}.xml"
    subprocess.run(
        [sys.executable, "-c", ARENAS_OF_THREADS, mode, str(report)],
        check=True,
        env={"PYTHONPATH": str(OPERATOR)},
        timeout=60,
    )
    return report.read_text().count("<heap nr=")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_threads_share_the_main_arena_whose_free_memory_is_kept(tmp_path: Path) -> None:
    """A thread's own arena is unmapped whole once free, whatever the trim threshold, so gRPC's
    reader threads faulted fresh pages for every buffer: half of a plain round's CPU."""
    assert arenas_for("default", tmp_path) > 1
    assert arenas_for("tuned", tmp_path) == 1
