"""Update streaming against this machine's limit: throughput, where the time goes, aggregator RSS.

Real processes over loopback gRPC, ratios from one run. Scenarios (a fresh aggregator each, so
its peak RSS belongs to one scenario):
  * one client streams one update of 1 GiB (4 GiB with --big, plain and SecAgg+ lanes);
  * 1, 10 and 50 clients each stream a 100 MB update into the same round.

The limit is measured in the same run for every scenario: the same client processes stream the
same bytes, as the same protobuf `UpdateMessage`s over the same channel options, into a sink
process whose servicer parses each message with protobuf and drops it (both with the product's
allocator settings, `fedfleet.memory`). ours/limit is the aggregator's cost beyond receiving
protobuf messages at all (checks, CRC, fold, bookkeeping).
Clients build each message while streaming (one serialization copy per chunk, the same in both).

`--secagg` scenarios stream uint32 words as the masked tensor of a real SecAgg+ round whose key
exchange the bench runs itself (3 clients, the minimum), so the aggregator keeps its masked
sum; the round's unmasking then fails (the words are not masked) and is not timed.

The breakdown times each stage of the aggregator's receive path in this process over the same
chunk messages (seconds per GiB), next to the measured cost per GiB of ours and of the limit.

    python bench/transfer.py [--big] [--quick] [--json-only]
    python bench/transfer.py --sweep MB [--repeats R]   # chunk size x HTTP/2 window
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO))

from fedfleet.aggregator.checkpoints import StreamedModel, write_model  # noqa: E402
from fedfleet.aggregator.layout import ModelLayout  # noqa: E402
from fedfleet.chunks import DEFAULT_CHUNK_BYTES, GRPC_OPTIONS, Chunk, checksum  # noqa: E402
from fedfleet.v1 import aggregator_pb2 as pb  # noqa: E402
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc  # noqa: E402

from tests.dataplane.harness import free_port, wait_healthy  # noqa: E402

MB = 1_000_000
GIB = 2**30
CHUNK_BYTES = [DEFAULT_CHUNK_BYTES]  # what clients send; --chunk-bytes changes it
# One client process: streams each listed client's update (tensors x elements of `dtype`, one
# constant per tensor) as UpdateMessages. The header round -1 means: no round, a sink.
WORKER = r"""
import json, os, sys, time, numpy as np, grpc
from fedfleet.chunks import GRPC_OPTIONS, checksum
from fedfleet.memory import reuse_message_buffers
from fedfleet.v1 import aggregator_pb2 as pb
reuse_message_buffers()  # what the product's clients and aggregator do
address, training, tensors, elements, dtype, chunk_bytes = sys.argv[1:7]
tensors, elements, chunk_bytes, dtype = int(tensors), int(elements), int(chunk_bytes), np.dtype(dtype)
clients = sys.argv[7:]
options = [*GRPC_OPTIONS, *map(tuple, json.loads(os.environ.get("BENCH_GRPC_OPTIONS", "[]")))]
if os.environ.get("BENCH_TLS"):  # mTLS as the product's clients dial: their credentials code
    from pathlib import Path
    from fedfleet.identity.credentials import channel_credentials, channel_options
    from fedfleet.identity.files import TlsFiles
    files = TlsFiles.in_dir(Path(os.environ["BENCH_TLS"]) / "client")
    channel = grpc.secure_channel(address, channel_credentials(*files.read()),
                                  options=[*options, *channel_options(os.environ["BENCH_TLS_NAME"])])
else:
    channel = grpc.insecure_channel(address, options=options)
upload = channel.stream_unary("/fedfleet.v1.Aggregator/UploadUpdate",
                              request_serializer=None, response_deserializer=pb.UploadReply.FromString)
join = channel.unary_unary("/fedfleet.v1.Aggregator/JoinRound",
                           request_serializer=pb.JoinRequest.SerializeToString,
                           response_deserializer=pb.JoinReply.FromString)
names = [f"secagg.masked"] if dtype == np.uint32 else [f"t{i:03d}" for i in range(tensors)]
step = chunk_bytes // dtype.itemsize
payloads = {}
def data_of(i, count):
    key = (i, count)
    if key not in payloads:
        value = np.full(count, (i + 1) if dtype == np.uint32 else 1e-3 * (i + 1), dtype=dtype).tobytes()
        payloads[key] = (value, checksum(value))
    return payloads[key]
def messages(header):
    yield pb.UpdateMessage(header=header).SerializeToString()
    for i, name in enumerate(names):
        for begin in range(0, elements, step):
            data, crc = data_of(i, min(step, elements - begin))
            chunk = pb.TensorChunk(name=name, dtype=dtype.name, shape=[elements],
                                   offset=begin * dtype.itemsize, data=data, crc32=crc)
            yield pb.UpdateMessage(chunk=chunk).SerializeToString()
replies = [join(pb.JoinRequest(training=training, client_id=c, session=c, wait_seconds=30)) for c in clients]
started = time.time()
for client, reply in zip(clients, replies):
    header = pb.UpdateHeader(training=training, client_id=client, round=reply.round, num_examples=1,
                             base_version=reply.model_version, session=client)
    upload(messages(header))
print(json.dumps({"started": started, "ended": time.time()}))
"""
# The limit: a server that parses every UpdateMessage with protobuf and keeps nothing.
SINK = r"""
import asyncio, json, os, sys, grpc
from fedfleet.chunks import GRPC_OPTIONS
from fedfleet.memory import reuse_message_buffers
from fedfleet.v1 import aggregator_pb2 as pb
reuse_message_buffers()  # what the product's clients and aggregator do
options = [*GRPC_OPTIONS, *map(tuple, json.loads(os.environ.get("BENCH_GRPC_OPTIONS", "[]")))]
async def upload(requests, context):
    count = 0
    async for message in requests:
        count += 1
    return pb.UploadReply(bytes_received=count)
async def join(request, context):
    return pb.JoinReply(action=pb.JoinReply.ACTION_TRAIN, round=1)
async def main():
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("fedfleet.v1.Aggregator", {
        "UploadUpdate": grpc.stream_unary_rpc_method_handler(upload, pb.UpdateMessage.FromString,
                                                              pb.UploadReply.SerializeToString),
        "JoinRound": grpc.unary_unary_rpc_method_handler(join, pb.JoinRequest.FromString,
                                                          pb.JoinReply.SerializeToString)}),))
    if os.environ.get("BENCH_TLS"):  # mTLS as the product's aggregator serves it
        from pathlib import Path
        from fedfleet.identity.credentials import server_credentials
        from fedfleet.identity.files import TlsFiles
        files = TlsFiles.in_dir(Path(os.environ["BENCH_TLS"]) / "aggregator")
        server.add_secure_port(sys.argv[1], server_credentials(files))
    else:
        server.add_insecure_port(sys.argv[1])
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def env() -> dict[str, str]:
    return os.environ | {"FEDFLEET_LOG_FORMAT": "json", "PYTHONPATH": str(REPO / "operator")}


def stream(
    address: str, training: str, tensors: int, elements: int, dtype: str, ids: list[str], workers: int
) -> float:
    """Seconds from the first client's first message to the last client's reply."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                address,
                training,
                str(tensors),
                str(elements),
                dtype,
                str(CHUNK_BYTES[0]),
                *group,
            ],
            env=env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for group in (ids[w::workers] for w in range(workers))
        if group
    ]
    spans = []
    for proc in procs:
        output, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError("a bench client failed")
        spans.append(json.loads(output.strip().splitlines()[-1]))
    return max(s["ended"] for s in spans) - min(s["started"] for s in spans)


def limit_seconds(
    tensors: int, elements: int, dtype: str, ids: list[str], workers: int, tls: bool = False
) -> float:
    """The same bytes into the sink; with `tls`, over mTLS (the product's default transport),
    with a fresh CA and the product's own credential code on both sides."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tls_dir:
        if tls:
            from fedfleet.identity.local import issue_local
            from fedfleet.identity.names import server_name

            issue_local(Path(tls_dir), "default", "bench", [("s", "client")])  # DIR/aggregator, DIR/client
            os.environ |= {"BENCH_TLS": tls_dir, "BENCH_TLS_NAME": server_name("bench", "default")}
        sink = subprocess.Popen(
            [sys.executable, "-c", SINK, f"127.0.0.1:{port}"], env=env(), stdout=subprocess.PIPE, text=True
        )
        try:
            assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
            return stream(f"127.0.0.1:{port}", "sink", tensors, elements, dtype, ids, workers)
        finally:
            sink.terminate()
            sink.wait()
            os.environ.pop("BENCH_TLS", None)
            os.environ.pop("BENCH_TLS_NAME", None)


def manifest_for(workdir: Path, model_path: Path, clients: int, secagg: bool) -> Path:
    manifest = workdir / "bench.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "fedfleet.io/v1alpha1",
                "kind": "FederatedTraining",
                "metadata": {"name": "bench"},
                "spec": {
                    "task": {"name": "digits-mlp"},
                    "model": {"source": str(model_path)},
                    "rounds": 1,
                    "sites": {"names": [f"s{i}" for i in range(clients)]},
                    "roundTimeoutSeconds": 3600,
                    "secureAggregation": {"enabled": secagg},
                },
            }
        )
    )
    return manifest


def secagg_keys(address: str, ids: list[str]) -> None:
    """Run the SecAgg+ key stages for `ids` so the aggregator takes their masked uploads."""
    from concurrent.futures import ThreadPoolExecutor

    from fedfleet.convert import round_config_from_pb
    from fedfleet.secagg import SecAggClient

    channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
    stub = pb_grpc.AggregatorStub(channel)
    replies = {
        c: stub.JoinRound(pb.JoinRequest(training="bench", client_id=c, session=c, wait_seconds=30))
        for c in ids
    }
    settings = round_config_from_pb(replies[ids[0]].config).secure_aggregation
    assert settings is not None, "the bench's round is masked"
    params = settings.params()
    clients = {c: SecAggClient("bench", 1, c, params, attempt=settings.attempt) for c in ids}
    stage = pb.SecAggRequest.Stage

    def call(c: str, which: int, payload: bytes) -> bytes:
        request = pb.SecAggRequest(
            training="bench", client_id=c, round=1, session=c, stage=which, payload=payload
        )
        return bytes(stub.SecAgg(request).payload)

    with ThreadPoolExecutor(len(ids)) as pool:
        keys = dict(
            zip(
                ids,
                pool.map(lambda c: call(c, stage.STAGE_ADVERTISE_KEYS, clients[c].advertise()), ids),
                strict=True,
            )
        )
        list(pool.map(lambda c: call(c, stage.STAGE_SHARE_KEYS, clients[c].share_keys(keys[c])), ids))
    channel.close()


def scenario(
    workdir: Path, model_bytes: int, clients: int, workers: int, secagg: bool = False
) -> dict[str, Any]:
    """One round: `clients` updates of `model_bytes` each, sent by `workers` client processes;
    then the same bytes into the sink (the limit)."""
    tensors = max(1, model_bytes // (64 * MB))
    elements = model_bytes // 4 // tensors
    layout = ModelLayout({f"t{i:03d}": (np.dtype(np.float32), (elements,)) for i in range(tensors)})
    model_path = workdir / "model.safetensors"
    write_model(model_path, StreamedModel(layout, lambda slot: np.zeros(slot.shape, np.float32)))
    manifest = manifest_for(workdir, model_path, clients, secagg)
    port = free_port()
    state = Path(tempfile.mkdtemp(dir=workdir))
    aggregator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedfleet",
            "aggregator",
            "--manifest",
            str(manifest),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--state-dir",
            str(state),
            "--insecure-local",
        ],
        stdout=subprocess.DEVNULL,
        env=env(),
    )
    ids = [f"c{i:03d}" for i in range(clients)]
    # SecAgg+: one uint32 tensor of M + 1 words (the weight word), as a masked upload is
    wire = ("uint32", 1, tensors * elements + 1) if secagg else ("float32", tensors, elements)
    try:
        address = f"127.0.0.1:{port}"
        wait_healthy(address, timeout=600)
        idle_rss = peak_rss_mb(aggregator.pid)
        control = pb_grpc.ControlStub(grpc.insecure_channel(address, options=GRPC_OPTIONS))
        control.StartRound(
            pb.StartRoundRequest(
                round=1, kind=pb.ROUND_KIND_TRAIN, participants=ids, timeout_seconds=3600, min_clients=clients
            )
        )
        if secagg:
            secagg_keys(address, ids)
        seconds = stream(address, "bench", wire[1], wire[2], wire[0], ids, workers)
        if not secagg:  # SecAgg+: the words were not masked, so the round cannot unmask them
            final = list(control.WatchRound(pb.WatchRequest(round=1)))[-1]
            assert final.phase == pb.ROUND_PHASE_SUCCEEDED, final
        peak = peak_rss_mb(aggregator.pid)
    finally:
        aggregator.terminate()
        aggregator.wait()
    limit = limit_seconds(wire[1], wire[2], wire[0], ids, workers)
    sent = clients * tensors * elements * 4
    return {
        "clients": clients,
        "update_mb": round(tensors * elements * 4 / MB, 1),
        "client_processes": min(clients, workers),
        "seconds": round(seconds, 2),
        "throughput_gb_s": round(sent / seconds / 1e9, 3),
        "limit_seconds": round(limit, 2),
        "limit_gb_s": round(sent / limit / 1e9, 3),
        "ours_over_limit_throughput": round(limit / seconds, 3),
        "aggregator_idle_rss_mb": round(idle_rss, 1),
        "aggregator_peak_rss_mb": round(peak, 1),
        "peak_rss_over_model": round(peak * 2**20 / (tensors * elements * 4), 2),
    }


def breakdown(sample_bytes: int = 256 * MB) -> dict[str, float]:
    """Seconds per GiB of each stage of the aggregator's receive path, in this process, over the
    same chunk messages the clients send."""
    from fedfleet.aggregator.admission import ChunkCheck
    from fedfleet.aggregator.checkpoints import CheckpointStore
    from fedfleet.aggregator.sums import PlainSum
    from fedfleet.wire import parse_update_message

    elements = sample_bytes // 4
    values = np.full(elements, 1e-3, dtype=np.float32)
    step = DEFAULT_CHUNK_BYTES // 4
    raw = [
        pb.UpdateMessage(
            chunk=pb.TensorChunk(
                name="t",
                dtype="float32",
                shape=[elements],
                offset=4 * b,
                data=(d := values[b : b + step].tobytes()),
                crc32=checksum(d),
            )
        ).SerializeToString()
        for b in range(0, elements, step)
    ]
    layout = ModelLayout({"t": (np.dtype(np.float32), (elements,))})
    plain = PlainSum(layout)
    plain.reset()
    staging = np.empty(elements, dtype=np.float32)
    staging.fill(0)
    chunks = [c for c in map(parse_update_message, raw) if isinstance(c, Chunk)]
    scale = GIB / sample_bytes

    def timed(run: Any) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        return round(best * scale, 3)

    def check_all() -> None:
        check = ChunkCheck(layout)
        for c in chunks:
            check.accept(c, check.values(c)[2])

    def copy_all() -> None:
        for c in chunks:
            first = c.offset // 4
            staging[first : first + len(c.data) // 4] = np.frombuffer(c.data, np.float32)

    tiny = Chunk("t", "float32", (elements,), 0, b"\0\0\0\0", checksum(b"\0\0\0\0"))

    def overhead() -> None:
        for _ in range(len(chunks)):
            ChunkCheck(layout).values(tiny)

    async def fold_one() -> None:
        upload = await plain.open_upload(1.0)
        for c in chunks:
            upload.add(c)
        upload.commit()

    def fold() -> None:
        import asyncio

        asyncio.run(fold_one())

    with tempfile.TemporaryDirectory() as tmp:
        store = CheckpointStore(Path(tmp))
        number = iter(range(100))
        checkpoint = timed(lambda: store.save(next(number), {"t": values}, {}, {}))
    return {
        "protobuf_parse_s_per_gib": timed(lambda: [pb.UpdateMessage.FromString(m) for m in raw]),
        "protobuf_data_read_s_per_gib": timed(
            lambda: [pb.UpdateMessage.FromString(m).chunk.data for m in raw]
        ),
        "wire_parse_zero_copy_s_per_gib": timed(lambda: [parse_update_message(m) for m in raw]),
        "crc32_s_per_gib": timed(lambda: [checksum(c.data) for c in chunks]),
        "finite_check_s_per_gib": timed(
            lambda: [np.isfinite(np.frombuffer(c.data, np.float32)).all() for c in chunks]
        ),
        "all_chunk_checks_s_per_gib": timed(check_all),
        "copy_to_staging_s_per_gib": timed(copy_all),
        "receive_and_fold_s_per_gib": timed(fold),
        "python_per_chunk_s_per_gib": timed(overhead),
        "checkpoint_write_s_per_gib": checkpoint,
        "chunk_bytes": DEFAULT_CHUNK_BYTES,
    }


SWEEP_CHUNKS = [1 << 20, 2 << 20, 4 << 20]
SWEEP_WINDOWS: dict[str, list[tuple[str, int]]] = {  # added to GRPC_OPTIONS on both ends
    "configured": [],
    "win 64 KiB+BDP": [("grpc.http2.lookahead_bytes", 64 << 10)],
    "win 1 MiB": [("grpc.http2.lookahead_bytes", 1 << 20)],
    "win 8 MiB": [("grpc.http2.lookahead_bytes", 8 << 20)],
    "win 8 MiB noBDP": [("grpc.http2.lookahead_bytes", 8 << 20), ("grpc.http2.bdp_probe", 0)],
}


def sweep(workdir: Path, model_bytes: int, repeats: int) -> list[dict[str, Any]]:
    """Chunk size x HTTP/2 flow-control window: for each chunk size, one update of `model_bytes`
    into the aggregator (ours, with the product's options, once) and, for each window setting,
    the same bytes into the protobuf sink (the limit: what gRPC itself does with that window;
    median of `repeats`)."""
    rows = []
    elements = model_bytes // 4
    for chunk in SWEEP_CHUNKS:
        CHUNK_BYTES[0] = chunk
        row: dict[str, Any] = {"chunk_bytes": chunk}
        row["ours_s"] = scenario(workdir, model_bytes, 1, 1)["seconds"]  # an aggregator start is slow
        for label, options in SWEEP_WINDOWS.items():
            os.environ["BENCH_GRPC_OPTIONS"] = json.dumps(options)
            try:
                times = [limit_seconds(1, elements, "float32", ["c000"], 1) for _ in range(repeats)]
            finally:
                del os.environ["BENCH_GRPC_OPTIONS"]
            row[f"limit_s {label}"] = round(statistics.median(times), 3)
        row["ours_over_limit"] = round(row["limit_s configured"] / row["ours_s"], 3)
        rows.append(row)
    CHUNK_BYTES[0] = DEFAULT_CHUNK_BYTES
    return rows


def sweep_table(rows: list[dict[str, Any]], model_bytes: int) -> str:
    labels = list(SWEEP_WINDOWS)
    head = f"{'chunk':>9} {'ours s':>7} {'ours/limit':>10} | " + " | ".join(
        f"{label:>14}" for label in labels
    )
    lines = [
        f"one update of {model_bytes // MB} MB; limit seconds per window setting:",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r['chunk_bytes'] // 1024:>6} KiB {r['ours_s']:>7.3f} {r['ours_over_limit']:>10.3f} | "
            + " | ".join(f"{r[f'limit_s {label}']:>15.3f}" for label in labels)
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big", action="store_true", help="also stream one 4 GiB update, plain and SecAgg+")
    parser.add_argument("--quick", action="store_true", help="10 MB updates and 1/10 clients (smoke run)")
    parser.add_argument("--only-big", action="store_true", help="only the 4 GiB scenarios")
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, help="upload chunk size")
    parser.add_argument("--one", type=int, default=0, help="only one update of this many MB, plain")
    parser.add_argument(
        "--sweep", type=int, default=0, help="only the chunk size x window sweep, one update of this many MB"
    )
    parser.add_argument("--repeats", type=int, default=3, help="with --sweep: runs per cell (median)")
    args = parser.parse_args()
    CHUNK_BYTES[0] = args.chunk_bytes
    if args.sweep:
        with tempfile.TemporaryDirectory() as tmp:
            rows = sweep(Path(tmp), args.sweep * MB, args.repeats)
        print(json.dumps({"sweep": rows, "load_average": os.getloadavg()}, indent=2))
        print(sweep_table(rows, args.sweep * MB))
        return
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps({"chunk_bytes": args.chunk_bytes} | scenario(Path(tmp), args.one * MB, 1, 1)))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only_big:
            big = [(4 * GIB, False), (4 * GIB, True)]
        elif args.quick:
            big = [(64 * MB, False), (64 * MB, True)]
        else:
            big = [(GIB, False), (GIB, True)] + ([(4 * GIB, False), (4 * GIB, True)] if args.big else [])
        for size, secagg in big:
            label = f"one {size // GIB} GiB update" if size >= GIB else f"one {size // MB} MB update"
            label += " (SecAgg+)" if secagg else ""
            results.append({"scenario": label} | scenario(Path(tmp), size, 3 if secagg else 1, 1, secagg))
        if not args.only_big:
            per_client = 10 * MB if args.quick else 100 * MB
            for clients in [1, 10] if args.quick else [1, 10, 50]:
                results.append(
                    {"scenario": f"{clients} x {per_client // MB} MB"}
                    | scenario(Path(tmp), per_client, clients, min(clients, 2))
                )
    fleet = [r for r in results if " x " in r["scenario"]]
    summary: dict[str, Any] = {}
    if fleet:
        summary["peak_rss_growth_most_vs_fewest_clients"] = round(
            fleet[-1]["aggregator_peak_rss_mb"] / fleet[0]["aggregator_peak_rss_mb"], 2
        )
    stages = breakdown(32 * MB if args.quick else 256 * MB)
    print(json.dumps({"results": results, "summary": summary, "breakdown": stages}, indent=2))
    if args.json_only:
        return
    columns = (
        ("seconds", 9),
        ("GB/s", 8),
        ("limit s", 9),
        ("limit GB/s", 12),
        ("ours/limit", 12),
        ("peak RSS MB", 13),
        ("peak/model", 12),
    )
    print("\n" + f"{'scenario':<32}" + "".join(f"{name:>{width}}" for name, width in columns))
    for r in results:
        cells = (
            r["seconds"],
            r["throughput_gb_s"],
            r["limit_seconds"],
            r["limit_gb_s"],
            r["ours_over_limit_throughput"],
            r["aggregator_peak_rss_mb"],
            r["peak_rss_over_model"],
        )
        print(
            f"{r['scenario']:<32}"
            + "".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, columns, strict=True))
        )
    if fleet:
        print(
            f"\npeak RSS with {fleet[-1]['clients']} clients / with {fleet[0]['clients']}: "
            f"{summary['peak_rss_growth_most_vs_fewest_clients']}x"
        )
    one = next((r for r in results if r["clients"] == 1 and "SecAgg" not in r["scenario"]), results[0])
    per_gib = {
        "ours (measured, end to end)": one["seconds"] * GIB / (one["update_mb"] * MB),
        "limit (measured, end to end)": one["limit_seconds"] * GIB / (one["update_mb"] * MB),
    }
    print(
        "\nwhere the time goes (seconds per GiB; stages timed in one process, "
        f"{stages['chunk_bytes']} B chunks)"
    )
    for name, value in per_gib.items():
        print(f"  {name:<40}{value:>8.3f}")
    for name, value in stages.items():
        if name.endswith("_s_per_gib"):
            print(f"  {name.removesuffix('_s_per_gib').replace('_', ' '):<40}{value:>8.3f}")


if __name__ == "__main__":
    main()
