"""SecAgg+ cost against this machine's own limit for the same work.

For each (N clients, M parameters), in one process and one run: client compute per client,
server compute, the whole round (all clients then the server, one after another), peak RSS,
and alongside, the limit for the same work, measured right after each round (medians over
--repeats rounds): expanding the same number of AES-128-CTR mask words into a reused buffer
and doing the same uint32 adds with numpy (client: k + 1 masks of M + 1 words; server: N
uploads summed plus N self masks removed). The ratio ours/limit is the overhead of everything
else (quantization, key agreement, Shamir, messages). Because the limit leaves out key
agreement, the "keys" column gives the measured cost of the 2k + 2 X25519 operations a client
cannot avoid, and ratio_floor compares against limit + keys.

With --grpc it also times whole rounds between real processes: `fedfleet local run` with N
client processes and an aggregator on loopback, a synthetic task whose update is M dense
parameters (bench/synthetic_task.py), with SecAgg+ on and off; the round time is the
aggregator's, from its log (round.started to round.closed: key exchange, download, upload,
unmasking, checkpoint, the next broadcast built; metrics.json's seconds end before the
checkpoint is written, as the round's own record, inside the checkpoint, must).
Each is set against the round's limit measured right after it: the round's bytes (downloads
and uploads) streamed as protobuf messages into a sink (bench/transfer.py), plus with SecAgg+
one client's mask expansion and the server's unmasking (`round_limits`); and against the
machine's limit, where all N clients' masks share this machine's cores as they do in the run.
Where each round's time went comes from the run's logs and /proc: until the last client had
the model, until the last upload was accepted, until the round closed, and the CPU seconds of
the aggregator and of all clients. It also reports the peak RSS of the aggregator and of the
largest client (the sending side) over the model's bytes. The rounds use mTLS (the product's
default) unless --plaintext; the limit streams in plaintext, and with mTLS rounds it is also
measured over mTLS (the same sink behind the product's own credentials: what encrypting the
round's bytes costs on this machine), each round set against both.

With --baseline REV it measures the same cases with this tree and with REV (checked out in a
temporary `git worktree`), in subprocesses of one run, at the former default
k = ceil(2 log2 N) so both draw the same graph size: the cost of what changed between them
(for the authenticated SecAgg+: signatures, certificate checks and the consistency round).
Each case runs --passes times, REV and this tree alternating (and which goes first
alternating too), so a burst of load from elsewhere hits both; it reports the medians over
passes, each pass's own overhead (the spread shows the noise) and the load average. With
--clock cpu both trees' rounds are timed by the thread's CPU time instead of the wall clock
(the rounds run in one thread), which leaves out the time spent waiting for a core.

    python bench/secagg.py [--quick] [--neighbours K] [--repeats R] [--json PATH] [--grpc]
    python bench/secagg.py --grpc-only 10x1e7 [--grpc-rounds R]
    python bench/secagg.py --baseline REV [--cases 10x1000000,100x100000] [--repeats R] [--passes P]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from fedfleet.identity.ca import Issuer  # noqa: E402
from fedfleet.identity.names import Identity  # noqa: E402
from fedfleet.secagg import (  # noqa: E402
    WEIGHT_WORDS,
    LongTermKey,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    Signer,
    Verifier,
)
from fedfleet.secagg.authentication import long_term_statement  # noqa: E402
from fedfleet.secagg.crypto import KeyPair  # noqa: E402
from fedfleet.secagg.masks import DEFAULT_BLOCK_WORDS, Keystream, Scratch  # noqa: E402

CASES = [(10, 1_000_000), (50, 1_000_000), (100, 100_000), (10, 10_000_000)]
QUICK = [(10, 100_000), (20, 50_000)]
CHUNK_WORDS = 1 << 18  # 1 MiB chunks on the (simulated) wire
GRPC_CASES = [(10, 1_000_000), (10, 10_000_000)]
GRPC_QUICK = [(4, 100_000)]


def proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so each case reports its own peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class Limit:
    """The least any implementation can spend on the same mask and add work: AES-CTR keystream
    into a reused block buffer plus numpy uint32 adds into preallocated, already touched arrays."""

    def __init__(self, words: int) -> None:
        self.out = np.empty(words, dtype=np.uint32)
        self.other = np.empty(words, dtype=np.uint32)
        self.out.fill(0)
        self.other.fill(1)
        self.scratch = Scratch(DEFAULT_BLOCK_WORDS)

    def masks(self, streams: int) -> float:
        """Seconds to expand `streams` keystreams of all words and add each into `out`."""
        keystreams = [Keystream(bytes([j % 256]) * 32) for j in range(streams)]
        step = self.scratch.block_words
        started = time.perf_counter()
        for begin in range(0, len(self.out), step):
            target = self.out[begin : begin + step]
            for stream in keystreams:
                np.add(target, stream.fill(self.scratch, begin, len(target)), out=target)
        return time.perf_counter() - started

    def adds(self, count: int) -> float:
        """Seconds for `count` uint32 `out += other` over all words."""
        started = time.perf_counter()
        for _ in range(count):
            np.add(self.out, self.other, out=self.out)
        return time.perf_counter() - started


def key_floor(k: int, repeats: int = 3) -> float:
    """Seconds for one client's unavoidable public-key work: 2 key pairs, 2k X25519 agreements."""
    runs = []
    for _ in range(repeats):
        peers = [KeyPair.generate().public for _ in range(k)]
        started = time.perf_counter()
        mine = [KeyPair.generate(), KeyPair.generate()]
        for pair in mine:
            for peer in peers:
                pair.agree(peer, b"bench")
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


class Identities:
    """What each client process and the aggregator hold across rounds: a long-term SecAgg+ key
    signed with a certificate of the training's CA, and a verifier of that CA. A long-running
    training has met every other client already, so the caches are warmed first (every
    signature checked, every pair key derived: one signature check and one X25519 per pair and
    process, `first_contact_s`); the rounds then measure the steady state."""

    def __init__(self, n: int) -> None:
        ca = Issuer.generate("bench CA", datetime.timedelta(days=1))
        self.ids = [f"client-{i:03d}" for i in range(n)]
        self.long_term = {}
        for c in self.ids:
            bundle = ca.issue(Identity.of_client("bench", "bench", "site", c), datetime.timedelta(days=1))
            self.long_term[c] = LongTermKey(Signer.from_pem(bundle.cert_pem, bundle.key_pem), "bench", c)
        self.verifiers = {c: Verifier(ca.trust_pem, "bench", "bench") for c in [*self.ids, ""]}
        started = time.perf_counter()
        for me in [*self.ids, ""]:
            for c, key in self.long_term.items():
                statement = long_term_statement("bench", c, key.public)
                self.verifiers[me].verify(c, key.credential, key.signature, statement)
                if me:
                    self.long_term[me].pair_key(c, key.public)
        self.first_contact_s = (time.perf_counter() - started) / (n + 1)


def one_round(
    params: SecAggParams,
    update: np.ndarray,
    out: np.ndarray,
    accumulator: np.ndarray,
    identities: Identities,
) -> dict[str, float]:
    """One whole round (all clients, then the server); seconds of client and server compute."""
    n, m = params.participants, len(update)
    ids = identities.ids
    weights = {c: float(1 + (i * 37) % 1000) for i, c in enumerate(ids)}
    client_s = server_s = 0.0
    round_started = time.perf_counter()

    t = time.perf_counter()
    server = SecAggServer(
        "bench", 1, ids, params, dimension=m, accumulator=accumulator, verifier=identities.verifiers[""]
    )
    server_s += time.perf_counter() - t
    t = time.perf_counter()
    clients = {
        c: SecAggClient(
            "bench", 1, c, params, long_term=identities.long_term[c], verifier=identities.verifiers[c]
        )
        for c in ids
    }
    adverts = {c: clients[c].advertise() for c in ids}
    client_s += time.perf_counter() - t

    t = time.perf_counter()
    for c in ids:
        server.add_keys(c, adverts[c])
    server.close_keys()
    neighbour_keys = {c: server.neighbours_payload(c) for c in ids}
    server_s += time.perf_counter() - t

    t = time.perf_counter()
    sealed = {c: clients[c].share_keys(neighbour_keys[c]) for c in ids}
    client_s += time.perf_counter() - t

    t = time.perf_counter()
    for c in ids:
        server.add_shares(c, sealed[c])
    server.close_shares()
    inboxes = {c: server.shares_payload(c) for c in ids}
    server_s += time.perf_counter() - t

    for c in ids:
        client = clients[c]
        t = time.perf_counter()
        client.receive_shares(inboxes[c])
        client.start_upload(m, weights[c])
        client_s += time.perf_counter() - t
        for offset in range(0, m, CHUNK_WORDS):
            chunk = update[offset : offset + CHUNK_WORDS]
            t = time.perf_counter()
            words = client.mask_chunk(offset, chunk, out[: len(chunk)])
            t2 = time.perf_counter()
            server.add_chunk(c, offset, words)
            t3 = time.perf_counter()
            client_s += t2 - t
            server_s += t3 - t2
        t = time.perf_counter()
        weight_words = client.weight_words()
        t2 = time.perf_counter()
        server.add_chunk(c, m, weight_words)
        client_s += t2 - t
        server_s += time.perf_counter() - t2

    t = time.perf_counter()
    server.close_inputs()
    survivors = {c: server.survivors_for(c) for c in ids}
    server_s += time.perf_counter() - t
    t = time.perf_counter()
    endorsed = {c: clients[c].endorse(survivors[c]) for c in ids}
    client_s += time.perf_counter() - t
    t = time.perf_counter()
    for c in ids:
        server.add_endorsements(c, endorsed[c])
    server.close_consistency()
    endorsements = {c: server.endorsements_for(c) for c in ids}
    server_s += time.perf_counter() - t
    t = time.perf_counter()
    reveals = {c: clients[c].reveal(endorsements[c]) for c in ids}
    client_s += time.perf_counter() - t
    t = time.perf_counter()
    for c in ids:
        server.add_reveal(c, reveals[c])
    values, total_weight = server.unmask()
    server_s += time.perf_counter() - t
    round_s = time.perf_counter() - round_started
    peak = proc_status_mb("VmHWM")

    expected_weight = sum(weights.values())
    step = params.max_weight / params.scale  # one code step, in output units
    error = max(  # in blocks: no float64 copy of the whole update
        float(
            np.max(
                np.abs(
                    values[b : b + CHUNK_WORDS] - update[b : b + CHUNK_WORDS] * np.float64(expected_weight)
                )
            )
        )
        for b in range(0, m, CHUNK_WORDS)
    )
    assert total_weight == expected_weight, (total_weight, expected_weight)
    bound = n * step + 0.5 * expected_weight * 2**-24  # codes off by < 1 step; float32 output rounding
    assert error <= bound, (error, bound)
    return {
        "client_s": client_s / n,
        "server_s": server_s,
        "round_s": round_s,
        "error": error,
        "bound": bound,
        "peak_mb": peak,
    }


def measure(n: int, m: int, neighbours: int, repeats: int) -> dict[str, Any]:
    """`repeats` rounds, each followed by the limits, so both see the same machine; medians."""
    gc.collect()
    baseline = proc_status_mb("VmRSS")
    reset_peak_rss()  # from here: the update, the buffers and the rounds
    params = SecAggParams.build(n, neighbours=neighbours, clip=1.0, max_weight=1000)
    update = np.random.default_rng(0).random(m, dtype=np.float32)  # no float64 temporary
    update -= np.float32(0.5)
    out = np.empty(CHUNK_WORDS, dtype=np.uint32)  # a client's chunk buffer, reused
    out.fill(0)
    accumulator = np.empty(m + WEIGHT_WORDS, dtype=np.uint32)  # the aggregator's, reused across rounds
    accumulator.fill(0)
    k = params.neighbours
    identities = Identities(n)
    rounds, client_limits, server_limits, keys = [], [], [], []
    rounds.append(one_round(params, update, out, accumulator, identities))
    peak = rounds[0]["peak_mb"]  # before the limit's own buffers exist
    limit = Limit(m + 1)
    for repeat in range(repeats):
        if repeat:
            rounds.append(one_round(params, update, out, accumulator, identities))
        client_limits.append(limit.masks(k + 1))
        server_limits.append(limit.masks(n) + limit.adds(n))
        keys.append(key_floor(k, repeats=1))
    del update, out, accumulator, limit
    gc.collect()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    per_client, server_s, round_s = med("client_s"), med("server_s"), med("round_s")
    client_limit, server_limit = statistics.median(client_limits), statistics.median(server_limits)
    key_s = statistics.median(keys)
    round_limit = n * client_limit + server_limit
    return {
        "clients": n,
        "parameters": m,
        "neighbours": k,
        "threshold": params.threshold,
        "repeats": repeats,
        "client_s": per_client,
        "client_limit_s": client_limit,
        "client_ratio": per_client / client_limit,
        "client_keys_s": key_s,
        "client_ratio_floor": per_client / (client_limit + key_s),
        "server_s": server_s,
        "server_limit_s": server_limit,
        "server_ratio": server_s / server_limit,
        "round_s": round_s,
        "round_limit_s": round_limit,
        "round_ratio": round_s / round_limit,
        "round_ratio_floor": round_s / (round_limit + n * key_s),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_over_baseline_mb": round(peak - baseline, 1),
        "max_abs_error": max(r["error"] for r in rounds),
        "error_bound": rounds[0]["bound"],
    }


class RunWatcher:
    """Peak RSS (VmHWM, MB) and CPU seconds (user + system) of the aggregator and of each client
    process of a local run, read from /proc every 0.1 s while it runs, for the processes the
    runner lists in OUT/processes.json (a high-water mark only grows, so the last read of each
    process is its peak). `cpu_between` interpolates the CPU samples at two instants."""

    def __init__(self, out: Path) -> None:
        self.listing = out / "processes.json"
        self.peaks: dict[str, float] = {"aggregator": 0.0, "client": 0.0}
        self.samples: list[tuple[float, float, float]] = []  # (time, aggregator CPU s, clients CPU s)
        self._tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RunWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pids: dict[str, int] = {}
        while not self._stop.wait(0.1):
            if not pids:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    pids = json.loads(self.listing.read_text())["pids"]
                continue
            cpu = {"aggregator": 0.0, "client": 0.0}
            for name, pid in pids.items():
                role = "aggregator" if name == "aggregator" else "client"
                with contextlib.suppress(OSError):
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    cpu[role] += (int(fields[11]) + int(fields[12])) / self._tick
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peaks[role] = max(self.peaks[role], int(line.split()[1]) / 1024)
            self.samples.append((time.time(), cpu["aggregator"], cpu["client"]))

    def cpu_between(self, begin: float, end: float) -> tuple[float, float]:
        """(aggregator, all clients) CPU seconds spent between two instants (time.time())."""

        def at(when: float) -> np.ndarray:
            times = [t for t, _, _ in self.samples]
            return np.array([np.interp(when, times, [sample[i] for sample in self.samples]) for i in (1, 2)])

        spent = at(end) - at(begin)
        return float(spent[0]), float(spent[1])


def _events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            event["t"] = datetime.datetime.fromisoformat(
                event["timestamp"].replace("Z", "+00:00")
            ).timestamp()
            events.append(event)
    return events


def round_breakdown(out: Path, watcher: RunWatcher) -> list[dict[str, float]]:
    """Per training round, from the run's logs: when the last client had the model (keys,
    download, load, evaluation), the last update was accepted (training, masks, upload), the
    round closed (consistency, reveals, unmasking, checkpoint, next broadcast); and the CPU
    seconds of the aggregator and of all clients between its start and its close."""
    logs = out / "logs"
    aggregator = _events(logs / "aggregator.log")
    clients = [e for path in logs.glob("site-*.log") for e in _events(path)]
    rounds = []
    for started in (e for e in aggregator if e["event"] == "round.started" and e["kind"] == "train"):
        number = started["round"]

        def last(events: list[dict[str, Any]], name: str, number: int = number) -> float:
            return max(e["t"] for e in events if e["event"] == name and e.get("round") == number)

        closed = next(
            e["t"]
            for e in aggregator
            if e["event"] == "round.closed" and e["round"] == number and e["kind"] == "train"
        )
        have_model = max(
            e["t"]
            for e in clients
            if e["event"] == "model.evaluated" and e["round"] == number and e["model_version"] == number - 1
        )
        uploaded = last(aggregator, "update.accepted")
        cpu = watcher.cpu_between(started["t"], closed)
        rounds.append(
            {
                "round_s": closed - started["t"],
                "to_model_s": have_model - started["t"],
                "to_uploads_s": uploaded - have_model,
                "to_close_s": closed - uploaded,
                "aggregator_cpu_s": cpu[0],
                "clients_cpu_s": cpu[1],
            }
        )
    return rounds


def grpc_round_seconds(
    n: int, m: int, secure: bool, rounds: int, workdir: Path, tls: bool = True
) -> tuple[list[float], dict[str, float], list[dict[str, float]]]:
    """Per-round seconds of a real `fedfleet local run` (N client processes, M parameters), the
    peak RSS in MB of its aggregator and of its largest client, and each round's breakdown."""
    manifest = workdir / f"bench-{n}-{m}-{int(secure)}.yaml"
    spec = {
        "task": {"name": "synthetic_task:SyntheticUpdate", "config": {"parameters": m}},
        "rounds": rounds,
        "sites": {"names": [f"site-{i:02d}" for i in range(n)]},
        "minClients": n,
        "roundTimeoutSeconds": 600,
        "secureAggregation": {"enabled": secure, "clipRange": 1.0},
        "tls": {"enabled": tls},
    }
    document = {"apiVersion": "fedfleet.io/v1alpha1", "kind": "FederatedTraining"}
    manifest.write_text(yaml.safe_dump(document | {"metadata": {"name": "bench"}, "spec": spec}))
    out = workdir / manifest.stem
    path = os.pathsep.join([str(REPO / "bench"), str(REPO / "operator"), os.environ.get("PYTHONPATH", "")])
    with RunWatcher(out) as watcher:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fedfleet",
                "local",
                "run",
                str(manifest),
                "--out",
                str(out),
                "--no-progress",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env=os.environ | {"PYTHONPATH": path},
        )
    parts = round_breakdown(out, watcher)
    return [part["round_s"] for part in parts], watcher.peaks, parts


def round_limits(n: int, m: int, tls: bool = False) -> dict[str, float]:
    """The round's limits, measured now. The bytes: each client's download of M float32 and
    upload of M + 1 uint32 words (or M float32) streamed as protobuf messages into a sink by two
    client processes (bench/transfer.py's limit). The masks: one client's expansion (k + 1
    keystreams of M + 1 words, added) and the server's removal of n self masks.

    `secure_limit_s` counts one client's masks (its critical path when every client has its
    own machine); `secure_machine_limit_s` counts all n clients' masks spread over this
    machine's cores, which they share in this bench."""
    from transfer import limit_seconds  # bench/transfer.py, next to this script

    ids = [f"c{i:03d}" for i in range(n)]
    secure_bytes = limit_seconds(1, 2 * m + 1, "uint32", ids, 2)
    plain_bytes = limit_seconds(1, 2 * m, "float32", ids, 2)
    over_tls = {}
    if tls:  # the same bytes over the rounds' own transport
        over_tls["bytes_secure_tls_s"] = limit_seconds(1, 2 * m + 1, "uint32", ids, 2, tls=True)
        over_tls["bytes_plain_tls_s"] = limit_seconds(1, 2 * m, "float32", ids, 2, tls=True)
    k = SecAggParams.build(n).neighbours
    compute = Limit(m + 1)
    client_masks = statistics.median([compute.masks(k + 1) for _ in range(3)])
    unmask = statistics.median([compute.masks(n) for _ in range(3)])
    cores = min(n, os.cpu_count() or 1)
    limits = {
        "bytes_secure_s": secure_bytes,
        "bytes_plain_s": plain_bytes,
        "client_masks_s": client_masks,
        "unmask_s": unmask,
        "cores": cores,
        "secure_limit_s": secure_bytes + client_masks + unmask,
        "secure_machine_limit_s": secure_bytes + n * client_masks / cores + unmask,
        "plain_limit_s": plain_bytes,
        **over_tls,
    }
    if tls:
        tls_bytes = over_tls["bytes_secure_tls_s"]
        limits["secure_tls_limit_s"] = tls_bytes + client_masks + unmask
        limits["secure_tls_machine_limit_s"] = tls_bytes + n * client_masks / cores + unmask
        limits["plain_tls_limit_s"] = over_tls["bytes_plain_tls_s"]
    return limits


def grpc_rounds(cases: list[tuple[int, int]], rounds: int, tls: bool = True) -> list[dict[str, Any]]:
    """Median round time with SecAgg+ and without, same run; round 1 (cold start) is left out;
    each against its limits, measured right after; where the time went (medians of the timed
    rounds' breakdowns); peak RSS of the aggregator and of a client (the sending side) over the
    model's float32 bytes."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, m in cases:
            load = os.getloadavg()[0]
            secure, secure_peaks, secure_parts = grpc_round_seconds(n, m, True, rounds, Path(tmp), tls)
            plain, plain_peaks, plain_parts = grpc_round_seconds(n, m, False, rounds, Path(tmp), tls)
            secure_s, plain_s = statistics.median(secure[1:]), statistics.median(plain[1:])
            limits = round_limits(n, m, tls)
            result: dict[str, Any] = {
                "clients": n,
                "parameters": m,
                "rounds_timed": rounds - 1,
                "tls": tls,
                "load_average": load,
                "load_average_after": os.getloadavg()[0],
                "secure_round_s": secure_s,
                "plain_round_s": plain_s,
                "secure_rounds_s": secure[1:],
                "plain_rounds_s": plain[1:],
                "secure_over_plain": secure_s / plain_s,
                **{f"limit_{key}": value for key, value in limits.items()},
                "secure_over_limit": secure_s / limits["secure_limit_s"],
                "secure_over_machine_limit": secure_s / limits["secure_machine_limit_s"],
                "plain_over_limit": plain_s / limits["plain_limit_s"],
                **(
                    {
                        "secure_over_tls_limit": secure_s / limits["secure_tls_limit_s"],
                        "secure_over_tls_machine_limit": secure_s / limits["secure_tls_machine_limit_s"],
                        "plain_over_tls_limit": plain_s / limits["plain_tls_limit_s"],
                    }
                    if tls
                    else {}
                ),
                "secure_client_peak_over_model": secure_peaks["client"] * 2**20 / (4 * m),
                "secure_aggregator_peak_over_model": secure_peaks["aggregator"] * 2**20 / (4 * m),
                "plain_client_peak_over_model": plain_peaks["client"] * 2**20 / (4 * m),
                "plain_aggregator_peak_over_model": plain_peaks["aggregator"] * 2**20 / (4 * m),
            }
            for label, parts in (("secure", secure_parts[1:]), ("plain", plain_parts[1:])):
                for key in parts[0] if parts else []:
                    result[f"{label}_{key}"] = statistics.median(part[key] for part in parts)
            results.append(result)
    return results


def grpc_table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'N':>4} {'M':>9} | {'SecAgg+ s':>9} {'limit':>6} {'ratio':>6} {'machine':>7} {'ratio':>6} |"
        f" {'plain s':>7} {'limit':>6} {'ratio':>6} | {'peak/model client':>17} {'aggregator':>10} |"
        f" {'load':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['clients']:>4} {r['parameters']:>9} | {r['secure_round_s']:>9.2f}"
            f" {r['limit_secure_limit_s']:>6.2f} {r['secure_over_limit']:>6.2f}"
            f" {r['limit_secure_machine_limit_s']:>7.2f} {r['secure_over_machine_limit']:>6.2f} |"
            f" {r['plain_round_s']:>7.2f} {r['limit_plain_limit_s']:>6.2f}"
            f" {r['plain_over_limit']:>6.2f} |"
            f" {r['secure_client_peak_over_model']:>17.2f} {r['secure_aggregator_peak_over_model']:>10.2f} |"
            f" {r['load_average']:>4.1f}/{r['load_average_after']:<4.1f}"
        )
    lines.append(
        "\nlimit: the round's bytes at the protobuf stream's speed + one client's masks + the server's"
        " unmasking;\nmachine: the same with all N clients' masks spread over this machine's cores."
    )
    for r in results:
        if "secure_over_tls_limit" in r:
            lines.append(
                f"over mTLS (the rounds' transport; the same bytes streamed over mTLS into the sink):"
                f" SecAgg+ limit {r['limit_secure_tls_limit_s']:.2f} s,"
                f" ratio {r['secure_over_tls_limit']:.2f},"
                f" machine {r['limit_secure_tls_machine_limit_s']:.2f} s,"
                f" ratio {r['secure_over_tls_machine_limit']:.2f};"
                f" plain limit {r['limit_plain_tls_limit_s']:.2f} s, ratio {r['plain_over_tls_limit']:.2f}"
            )
    lines.append("\nwhere each round's time went (medians of the timed rounds; seconds):")
    parts = (
        f"{'':>8} {'round':>6} | {'keys+model':>10} {'train+masks+upload':>18} {'unmask+save':>11} |"
        f" {'CPU aggregator':>14} {'clients':>7} {'busy':>5}"
    )
    lines.append(parts)
    for r in results:
        for label, name in (("secure", "SecAgg+"), ("plain", "plain")):
            if f"{label}_to_model_s" not in r:
                continue
            cpu = r[f"{label}_aggregator_cpu_s"] + r[f"{label}_clients_cpu_s"]
            lines.append(
                f"{name:>8} {r[f'{label}_round_s']:>6.2f} | {r[f'{label}_to_model_s']:>10.2f}"
                f" {r[f'{label}_to_uploads_s']:>18.2f} {r[f'{label}_to_close_s']:>11.2f} |"
                f" {r[f'{label}_aggregator_cpu_s']:>14.2f} {r[f'{label}_clients_cpu_s']:>7.2f}"
                f" {cpu / (r['limit_cores'] * r[f'{label}_round_s']):>5.0%}"
            )
    lines.append(
        "limit parts: bytes SecAgg+ {:.2f} s, plain {:.2f} s; one client's masks {:.3f} s; unmasking"
        " {:.3f} s; cores {}".format(
            results[-1]["limit_bytes_secure_s"],
            results[-1]["limit_bytes_plain_s"],
            results[-1]["limit_client_masks_s"],
            results[-1]["limit_unmask_s"],
            results[-1]["limit_cores"],
        )
        if results
        else ""
    )
    lines.append("busy: CPU seconds of the aggregator and all clients over (cores x round seconds).")
    return "\n".join(lines)


def table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'N':>4} {'M':>9} {'k':>3} {'t':>3} | {'client ms':>9} {'limit':>7} {'ratio':>5} {'keys':>6}"
        f" {'floor':>5} | {'server ms':>9} {'limit':>7} {'ratio':>5} | {'round s':>7} {'limit':>6}"
        f" {'ratio':>5} {'floor':>5} | {'RSS MB':>6} {'+case':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['clients']:>4} {r['parameters']:>9} {r['neighbours']:>3} {r['threshold']:>3} |"
            f" {r['client_s'] * 1e3:>9.2f} {r['client_limit_s'] * 1e3:>7.2f} {r['client_ratio']:>5.2f}"
            f" {r['client_keys_s'] * 1e3:>6.2f} {r['client_ratio_floor']:>5.2f} |"
            f" {r['server_s'] * 1e3:>9.2f} {r['server_limit_s'] * 1e3:>7.2f} {r['server_ratio']:>5.2f} |"
            f" {r['round_s']:>7.3f} {r['round_limit_s']:>6.3f} {r['round_ratio']:>5.2f}"
            f" {r['round_ratio_floor']:>5.2f} | {r['peak_rss_mb']:>6.0f}"
            f" {r['peak_rss_over_baseline_mb']:>6.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, seconds)")
    parser.add_argument(
        "--neighbours", type=int, default=0, help="k; 0 (default) = ceil(2 log2 N), capped at N - 1"
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds per case (medians are reported)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--grpc", action="store_true", help="also time whole rounds between processes")
    parser.add_argument("--baseline", help="a git revision to compare this tree against (see above)")
    parser.add_argument("--cases", help="with --baseline: NxM,NxM (default 10x1000000,100x100000)")
    parser.add_argument(
        "--passes", type=int, default=3, help="with --baseline: alternating passes per case (medians)"
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="with --baseline: time with the wall clock or the measuring thread's CPU time (steadier"
        " under load from other processes: time spent waiting for a core is not counted)",
    )
    parser.add_argument("--grpc-only", help="only whole rounds over gRPC, for these NxM,NxM cases")
    parser.add_argument(
        "--grpc-rounds", type=int, default=3, help="rounds per gRPC run (the first is not timed)"
    )
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="gRPC rounds without mTLS (spec.tls.enabled false), the limit's own transport",
    )
    args = parser.parse_args()
    if args.grpc_only:
        cases = [(int(n), int(float(m))) for n, m in (c.split("x") for c in args.grpc_only.split(","))]
        over_grpc = grpc_rounds(cases, args.grpc_rounds, not args.plaintext)
        print(json.dumps([rounded(r) for r in over_grpc], indent=2))
        print("\nwhole rounds over gRPC between processes (fedfleet local run, synthetic update):")
        print(grpc_table(over_grpc))
        return
    if args.baseline:
        cases = COMPARE_CASES
        if args.cases:
            cases = [(int(n), int(m)) for n, m in (c.split("x") for c in args.cases.split(","))]
        compared = compare(args.baseline, cases, args.repeats, args.passes, args.clock)
        print(json.dumps([rounded(r) for r in compared], indent=2))
        if args.json:
            args.json.write_text(json.dumps([rounded(r) for r in compared], indent=2) + "\n")
        print()
        print(compare_table(compared, args.baseline))
        return
    measure(5, 10_000, 0, 1)  # warm-up, not reported: imports, caches, this thread's scratch
    cases = QUICK if args.quick else CASES
    results = [measure(n, m, args.neighbours, args.repeats) for n, m in cases]
    over_grpc = (
        grpc_rounds(GRPC_QUICK if args.quick else GRPC_CASES, args.grpc_rounds, not args.plaintext)
        if args.grpc
        else []
    )
    document: Any = [rounded(r) for r in results]
    if args.grpc:
        document = {"compute": document, "grpc": [rounded(r) for r in over_grpc]}
    print(json.dumps(document, indent=2))
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    print()
    print(table(results))
    print(
        "\nlimit: AES-128-CTR expansion of the same mask words + the same uint32 adds (numpy, preallocated);"
        "\nkeys: 2 key pairs + 2k X25519/HKDF agreements per client; floor: ratio against limit + keys."
        f"\nk = ceil(2 log2 N) unless --neighbours; e.g. N=100 -> {math.ceil(2 * math.log2(100))}."
    )
    if over_grpc:
        print("\nwhole rounds over gRPC between processes (fedfleet local run, synthetic update):")
        print(grpc_table(over_grpc))


COMPARE_CASES = [(10, 1_000_000), (100, 100_000)]
MEASURE_IN = (  # run in a subprocess with the bench folder of one tree: its `measure`, as JSON
    "import json, sys, time; sys.path.insert(0, sys.argv[1]); "
    "time.perf_counter = time.thread_time if sys.argv[3] == 'cpu' else time.perf_counter; "
    "import secagg as b; b.measure(5, 10_000, 0, 1); "
    "print(json.dumps(b.measure(*json.loads(sys.argv[2]))))"
)


def measure_tree(bench_dir: Path, n: int, m: int, k: int, repeats: int, clock: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", MEASURE_IN, str(bench_dir), json.dumps([n, m, k, repeats]), clock],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def compare(
    baseline: str, cases: list[tuple[int, int]], repeats: int, passes: int, clock: str = "wall"
) -> list[dict[str, Any]]:
    """This tree against `baseline`, case by case: `passes` alternating pairs of subprocesses,
    each the median of `repeats` rounds; medians over the passes."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), baseline],
            check=True,
            capture_output=True,
        )
        try:
            for n, m in cases:
                k = math.ceil(2 * math.log2(n))
                load = os.getloadavg()[0]
                befores: list[dict[str, Any]] = []
                afters: list[dict[str, Any]] = []
                for done in range(passes):
                    pair = [(tree, befores), (REPO, afters)]
                    for root, runs in pair if done % 2 == 0 else pair[::-1]:
                        runs.append(measure_tree(root / "bench", n, m, k, repeats, clock))

                def med(runs: list[dict[str, Any]], key: str) -> float:
                    return statistics.median(r[key] for r in runs)

                results.append(
                    {
                        "clients": n,
                        "parameters": m,
                        "neighbours": afters[0]["neighbours"],
                        "threshold_before": befores[0]["threshold"],
                        "threshold_after": afters[0]["threshold"],
                        "passes": passes,
                        "clock": clock,
                        "load_average": load,
                        "client_s_before": med(befores, "client_s"),
                        "client_s_after": med(afters, "client_s"),
                        "server_s_before": med(befores, "server_s"),
                        "server_s_after": med(afters, "server_s"),
                        "round_s_before": med(befores, "round_s"),
                        "round_s_after": med(afters, "round_s"),
                        "round_overhead": med(afters, "round_s") / med(befores, "round_s") - 1,
                        "pass_overheads": [
                            a["round_s"] / b["round_s"] - 1 for b, a in zip(befores, afters, strict=True)
                        ],
                    }
                )
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
    return results


def compare_table(results: list[dict[str, Any]], baseline: str) -> str:
    head = (
        f"{'N':>4} {'M':>9} {'k':>3} {'t':>5} | {'client ms':>17} | {'server ms':>17} |"
        f" {'round s':>15} | {'overhead':>8} | {'per pass':>22} | {'load':>5}"
    )
    clock = results[0]["clock"] if results else "wall"
    lines = [
        f"before = {baseline}, after = this tree (medians over alternating passes; one run; {clock} clock)",
        head,
    ]
    lines.append("-" * len(head))
    for r in results:
        lines.append(
            f"{r['clients']:>4} {r['parameters']:>9} {r['neighbours']:>3}"
            f" {r['threshold_before']:>2}/{r['threshold_after']:<2} |"
            f" {r['client_s_before'] * 1e3:>8.2f} {r['client_s_after'] * 1e3:>8.2f} |"
            f" {r['server_s_before'] * 1e3:>8.2f} {r['server_s_after'] * 1e3:>8.2f} |"
            f" {r['round_s_before']:>7.3f} {r['round_s_after']:>7.3f} | {r['round_overhead']:>+7.1%} |"
            f" {' '.join(f'{o:+.0%}' for o in r['pass_overheads']):>22} | {r['load_average']:>5.1f}"
        )
    return "\n".join(lines)


def rounded(result: dict[str, Any]) -> dict[str, Any]:
    def one(value: Any) -> Any:
        if isinstance(value, list):
            return [one(v) for v in value]
        return float(f"{value:.4g}") if isinstance(value, float) else value

    return {k: one(v) for k, v in result.items()}


if __name__ == "__main__":
    main()
