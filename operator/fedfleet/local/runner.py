"""`fedfleet local run`: the aggregator and one process per site client on loopback, rounds driven
through the aggregator's Control service by the same round driver the operator uses
(`fedfleet.rounds`), with the processes as its fleet and an in-memory recorder (`local/ports.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedfleet.api.training import FederatedTraining, RetrySpec
from fedfleet.chunks import GRPC_OPTIONS
from fedfleet.controller import core
from fedfleet.convert import aggregator_view, round_record
from fedfleet.identity.credentials import channel_credentials, channel_options
from fedfleet.identity.files import TlsFiles
from fedfleet.identity.local import issue_local
from fedfleet.identity.names import server_name
from fedfleet.local.lifeline import Lifeline
from fedfleet.local.ports import MemoryRecorder, ProcessFleet
from fedfleet.local.processes import Supervised
from fedfleet.local.progress import RoundProgress
from fedfleet.logs import get_logger
from fedfleet.provenance.signing import generate_signing_key
from fedfleet.rounds.control import ControlAggregator
from fedfleet.rounds.driver import Bookkeeping, RoundDriver, Unreachable
from fedfleet.rounds.ports import (
    AggregatorError,
    AggregatorRefused,
    AggregatorUnavailable,
    RoundSnapshot,
    SiteAccount,
)
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc

log = get_logger(component="local")
AGGREGATOR_RETRY = RetrySpec(max_attempts=10, backoff_seconds=0.5, max_round_attempts=1)
LINEAGE_KEY_FILE = "lineage-key.pem"  # signs the run's lineage records; private, mode 0600
WAIT_SECONDS = 0.3  # between steps while the next round waits for clients
WATCH_FALLBACK_SECONDS = 2.0  # between steps while a round runs and its watch says nothing
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # like Ctrl-C: the run stops its processes first


class LocalRunStopped(Exception):
    """A stop signal ended the run after it stopped its processes (the state stays: a rerun resumes)."""

    def __init__(self, signum: signal.Signals) -> None:
        super().__init__(f"stopped by {signum.name}")
        self.signum = signum


class LocalRunError(RuntimeError):
    """The federation could not finish; the message is the one-line reason."""


@dataclass
class RunResult:
    training: str
    model_version: int
    model_digest: str
    rounds: list[dict[str, Any]]
    final_evaluation: dict[str, Any] | None
    seconds: float
    stop_reason: str = ""  # PrivacyBudgetExhausted when the budget ended the training early
    stop_message: str = ""
    lineage_head: str = ""
    lineage_public_key: str = ""  # PEM; empty when the records are unsigned
    lineage_key_fingerprint: str = ""
    sites: tuple[SiteAccount, ...] = ()  # each site's figures, as the aggregator counted them


@dataclass
class LocalRunner:
    training: FederatedTraining
    manifest_path: Path
    out_dir: Path
    port: int = 0
    show_progress: bool = True
    processes: dict[str, Supervised] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spec = self.training.spec
        if not self.spec.sites.names:
            raise LocalRunError("spec.sites: a local run needs site names (label selectors need a cluster)")
        if self.spec.suspend:
            raise LocalRunError(
                "spec.suspend: a local run does not suspend (stop it with Ctrl-C; running it again "
                "resumes from its state folder)"
            )
        if errors := self.spec.semantic_errors():
            raise LocalRunError("; ".join(errors))
        self.port = self.port or _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.lineage_key = self.out_dir / LINEAGE_KEY_FILE
        self.tls: dict[str, TlsFiles] = {}  # by process name; empty: plaintext on loopback

    # -- processes ---------------------------------------------------------------------------
    def _plan_processes(self, lifeline: Lifeline) -> None:
        logs = self.out_dir / "logs"
        manifest = str(self.manifest_path.resolve())
        self.processes["aggregator"] = Supervised(
            "aggregator",
            [
                "aggregator",
                "--manifest",
                manifest,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--state-dir",
                str(self.out_dir / "state"),
                *self._tls_args("aggregator"),
                "--lineage-key",
                str(self.lineage_key),
            ],
            logs / "aggregator.log",
            AGGREGATOR_RETRY,
            lifeline=lifeline,
        )
        total = self.spec.expected_clients()
        for site_index, site in enumerate(self.spec.sites.names):
            for index in range(self.spec.clients_per_site):
                client_id = f"{site}-{index}"
                partition = site_index * self.spec.clients_per_site + index
                self.processes[client_id] = Supervised(
                    client_id,
                    [
                        "client",
                        "--manifest",
                        manifest,
                        "--aggregator",
                        self.address,
                        "--site",
                        site,
                        "--client-id",
                        client_id,
                        "--partition",
                        str(partition),
                        "--num-partitions",
                        str(total),
                        *self._tls_args(client_id),
                    ],
                    logs / f"{client_id}.log",
                    self.spec.retry,
                    lifeline=lifeline,
                )

    def _issue_certificates(self) -> None:
        """mTLS unless spec.tls.enabled is false: a fresh CA per run, certificates in OUT/tls."""
        if not self.spec.tls.enabled:
            log.warning(
                "transport.plaintext", address=self.address, reason="spec.tls.enabled false: loopback only"
            )
            return
        meta = self.training.metadata
        clients = [
            (site, f"{site}-{i}") for site in self.spec.sites.names for i in range(self.spec.clients_per_site)
        ]
        self.tls = issue_local(self.out_dir / "tls", meta.namespace, meta.name, clients)

    def _tls_args(self, name: str) -> list[str]:
        files = self.tls.get(name)
        if files is None:
            return ["--insecure-local"] if name == "aggregator" else []
        args = ["--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca)]
        return args if name == "aggregator" else [*args, "--tls-server-name", self._server_name]

    @property
    def _server_name(self) -> str:
        return server_name(self.training.metadata.name, self.training.metadata.namespace)

    def _channel(self) -> grpc.aio.Channel:
        """The runner is the controller: it dials as the controller identity."""
        files = self.tls.get("controller")
        if files is None:
            return grpc.aio.insecure_channel(self.address, options=GRPC_OPTIONS)
        creds = channel_credentials(*files.read())
        options = [*GRPC_OPTIONS, *channel_options(self._server_name)]
        return grpc.aio.secure_channel(self.address, creds, options=options)

    @property
    def clients(self) -> list[Supervised]:
        return [p for name, p in self.processes.items() if name != "aggregator"]

    def _write_pids(self) -> None:
        pids = {name: p.pid for name, p in self.processes.items() if p.running}
        tls = str(self.out_dir / "tls") if self.tls else None  # controller/ there: what a tool dials with
        table = {"address": self.address, "pids": pids, "tls": tls, "serverName": self._server_name}
        (self.out_dir / "processes.json").write_text(json.dumps(table))

    async def _supervise(self) -> None:
        """Restart whatever may be restarted; any change wakes the driver (a failed client is
        dropped from the round in flight by the driver's next step)."""
        while True:
            changed = False
            for proc in self.processes.values():
                code = proc.poll_failure()
                if proc.due_for_restart():
                    proc.start()
                    changed = True
                changed |= code is not None
            if changed:
                self._write_pids()
                self._changed.set()
            await asyncio.sleep(0.2)

    async def _wait_healthy(self, channel: grpc.aio.Channel, timeout: float = 120.0) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            aggregator = self.processes["aggregator"]
            if aggregator.given_up:
                raise LocalRunError(f"the aggregator keeps failing; see {aggregator.log_path}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
        raise LocalRunError(f"the aggregator did not become healthy in {timeout:.0f}s")

    # -- rounds ------------------------------------------------------------------------------
    async def _drive(
        self, driver: RoundDriver, aggregator: ControlAggregator, channel: grpc.aio.Channel
    ) -> None:
        """Driver steps until the training finishes; between steps it sleeps until the round
        it follows changes (WatchRound), a process changes, or a short wait passes."""
        book = Bookkeeping()
        watch: tuple[int, asyncio.Task[None]] | None = None
        try:
            while True:
                try:
                    result = await driver.step(book)
                    if isinstance(result, Unreachable):
                        raise result.error
                except AggregatorRefused as err:
                    raise LocalRunError(f"aggregator refused: {err}") from None
                except AggregatorUnavailable as err:
                    log.warning("aggregator.unreachable", reason=str(err))
                    await self._wait_healthy(channel)  # restarted by the supervisor, from checkpoints
                    continue
                action = result.action
                if isinstance(action, core.Finish):
                    return
                if isinstance(action, core.FailTraining):
                    raise LocalRunError(action.reason)
                timeout = WAIT_SECONDS
                if isinstance(action, core.StartRound | core.WatchRound):
                    if watch is None or watch[0] != action.number or watch[1].done():
                        if watch is not None:
                            watch[1].cancel()
                        watch = (action.number, asyncio.create_task(self._follow(aggregator, action.number)))
                    timeout = WATCH_FALLBACK_SECONDS
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)
                self._changed.clear()
        finally:
            if watch is not None:
                watch[1].cancel()

    async def _follow(self, aggregator: ControlAggregator, number: int) -> None:
        """Wake the driver on each state of the round, and once it has ended."""
        try:
            async for _ in aggregator.watch(number):
                self._changed.set()
        except AggregatorError:
            await asyncio.sleep(WAIT_SECONDS)  # the aggregator went away: the next step finds out
        self._changed.set()

    async def run(self) -> RunResult:
        """The whole run. SIGTERM or SIGHUP cancel it like Ctrl-C does, so no aggregator or client
        process outlives it (with the default handlers they would run on, orphaned); where it is
        killed outright, its processes stop themselves when their lifeline to it breaks."""
        loop, run = asyncio.get_running_loop(), asyncio.current_task()
        assert run is not None
        received: list[signal.Signals] = []

        def stop(signum: signal.Signals) -> None:
            received.append(signum)
            run.cancel()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop, signum)
        try:
            with Lifeline() as lifeline:
                return await self._run(lifeline)
        except asyncio.CancelledError:
            if not received:
                raise
            run.uncancel()
            raise LocalRunStopped(received[0]) from None
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    async def _run(self, lifeline: Lifeline) -> RunResult:
        started = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self.lineage_key.exists():  # kept: a resumed run signs with the same key
            generate_signing_key(self.lineage_key)
        self._issue_certificates()
        self._plan_processes(lifeline)
        for proc in self.processes.values():
            proc.start()
        self._write_pids()
        self._changed = asyncio.Event()
        channel = self._channel()
        control = pb_grpc.ControlStub(channel)
        aggregator = ControlAggregator(control, status_timeout=10, population=self.spec.expected_clients())
        supervisor = asyncio.create_task(self._supervise())
        try:
            with RoundProgress(enabled=self.show_progress) as progress:
                recorder = MemoryRecorder(progress, self.spec.rounds)
                driver = RoundDriver(self.spec, aggregator, ProcessFleet(self.clients), recorder)
                await self._wait_healthy(channel)
                await self._drive(driver, aggregator, channel)
            status = await control.GetStatus(pb.StatusRequest(), timeout=10)
            history = await aggregator.completed_rounds()
            await self._wait_clients_exit(timeout=30)
        finally:
            supervisor.cancel()
            for proc in self.processes.values():
                proc.stop()
            await channel.close(grace=None)
        rounds = [round_record(r) for r in history]
        self._add_epsilon(rounds, history)
        finish = recorder.finish or core.Finish()
        return RunResult(
            training=self.training.metadata.name,
            model_version=status.model_version,
            model_digest=status.model_digest,
            rounds=rounds,
            final_evaluation=recorder.evaluation,
            seconds=time.monotonic() - started,
            stop_reason=finish.reason,
            stop_message=finish.message,
            lineage_head=status.lineage_head,
            lineage_public_key=status.lineage_public_key,
            lineage_key_fingerprint=status.lineage_key_fingerprint,
            sites=aggregator_view(status).sites,
        )

    def _add_epsilon(self, rounds: list[dict[str, Any]], history: list[RoundSnapshot]) -> None:
        """Each released round's DP record and the training's epsilon once it was released
        (`history`: the completed rounds in order, as `rounds` lists them)."""
        if not self.spec.privacy.enabled:
            return
        from fedfleet.privacy.budget import epsilon_after_each  # dp-accounting: only with DP

        released = [r.privacy for r in history if r.privacy is not None]
        epsilons = iter(epsilon_after_each(self.spec.privacy, released, self.spec.expected_clients()))
        for row, state in zip(rounds, history, strict=True):
            privacy = state.privacy
            if privacy is not None:
                row["privacy"] = privacy.to_record()
                row["epsilon"] = next(epsilons)

    async def _wait_clients_exit(self, timeout: float) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until and any(p.running for p in self.clients):
            await asyncio.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
