"""gRPC servicers: translate messages to the round engine and refusals to statuses.

Every call is authorised against the caller's certificate before the engine sees it (see
`fedfleet.identity.peer`): site clients act only as themselves, the Control service answers
only the operator's controller identity. Plaintext serves loopback only, for local runs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedfleet.aggregator.admission import UploadHeader
from fedfleet.aggregator.engine import RoundEngine
from fedfleet.aggregator.handshakes import handshake_refusals
from fedfleet.aggregator.metrics import AUTH_REFUSALS
from fedfleet.aggregator.rounds import Kind, Phase, Round
from fedfleet.aggregator.secure import ADVERTISE_KEYS, CONSISTENCY, SHARE_KEYS, UNMASK
from fedfleet.chunks import GRPC_OPTIONS, Chunk
from fedfleet.convert import round_config_to_pb
from fedfleet.identity.credentials import server_credentials
from fedfleet.identity.files import TlsConfigError, TlsFiles, is_loopback
from fedfleet.identity.peer import AuthRefusal, Policy, peer_identity
from fedfleet.logs import get_logger
from fedfleet.refusal import Refusal
from fedfleet.text import shorten
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc
from fedfleet.wire import Malformed, UpdatePart, parse_update_message

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]
MAX_REFUSAL_CHARACTERS = 1024
ACCEPT_KEEPALIVES = [  # clients ping every 20 s (client/connection.py); allow it, also between calls
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
log = get_logger(component="aggregator")

PHASES = {
    Phase.PENDING: pb.ROUND_PHASE_PENDING,
    Phase.TRAINING: pb.ROUND_PHASE_TRAINING,
    Phase.AGGREGATING: pb.ROUND_PHASE_AGGREGATING,
    Phase.SUCCEEDED: pb.ROUND_PHASE_SUCCEEDED,
    Phase.FAILED: pb.ROUND_PHASE_FAILED,
}
KINDS = {Kind.TRAIN: pb.ROUND_KIND_TRAIN, Kind.EVALUATE: pb.ROUND_KIND_EVALUATE}
METRICS_PHASES = {pb.MetricsReport.PHASE_TRAIN: Kind.TRAIN, pb.MetricsReport.PHASE_EVALUATE: Kind.EVALUATE}
SECAGG_STAGES = {
    pb.SecAggRequest.STAGE_ADVERTISE_KEYS: ADVERTISE_KEYS,
    pb.SecAggRequest.STAGE_SHARE_KEYS: SHARE_KEYS,
    pb.SecAggRequest.STAGE_CONSISTENCY: CONSISTENCY,
    pb.SecAggRequest.STAGE_UNMASK: UNMASK,
}
ACTIONS = {
    "wait": pb.JoinReply.ACTION_WAIT,
    "train": pb.JoinReply.ACTION_TRAIN,
    "evaluate": pb.JoinReply.ACTION_EVALUATE,
    "finished": pb.JoinReply.ACTION_FINISHED,
}


async def refuse(context: Context, method: str, refusal: Refusal) -> None:
    """Log, count (caller refusals) and abort with the refusal's status; never returns. The
    message is bounded whatever went into it: a refusal must fit in a status, a log line stay short."""
    message = shorten(refusal.message, MAX_REFUSAL_CHARACTERS)
    refusal.__traceback__ = None  # its frames hold the refused request (a 7 MiB chunk): free them now
    if isinstance(refusal, AuthRefusal):
        AUTH_REFUSALS.labels(reason=refusal.reason).inc()
        log.warning(
            "auth.refused",
            method=method,
            code=refusal.code,
            reason=refusal.reason,
            detail=message,
            peer=context.peer(),
        )
    else:
        log.warning("request.refused", method=method, code=refusal.code, reason=message)
    await context.abort(grpc.StatusCode[refusal.code], message)


def refusals_to_status(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> T:
        try:
            return await method(self, request, context)
        except Refusal as refusal:
            await refuse(context, method.__name__, refusal)
            raise  # unreachable: abort raises

    return wrapper


class Guard:
    """The servicers' view of authorisation; without a policy (plaintext, loopback) it admits all."""

    def __init__(self, policy: Policy | None) -> None:
        self.policy = policy
        self.revoked: dict[str, str] = {}  # site -> why its clients are refused (RevokeSites)
        self.sites: dict[str, str] = {}  # client id -> the site its certificate names

    def client(self, context: Context, client_id: str, site: str | None = None) -> None:
        if self.policy is None:
            return
        who = peer_identity(context.auth_context())
        self.policy.client(who, client_id, site)
        if who.site in self.revoked:
            raise AuthRefusal("PERMISSION_DENIED", "site_revoked", self.why_revoked(who.site))
        self.sites[client_id] = who.site  # bounded: only clients the training's CA certified

    def why_revoked(self, site: str) -> str:
        return f"site {site!r} was revoked at the hub: {self.revoked[site]}"

    def controller(self, context: Context) -> None:
        if self.policy is not None:
            self.policy.controller(peer_identity(context.auth_context()))


def round_to_pb(round_: Round) -> pb.RoundState:
    return pb.RoundState(
        round=round_.number,
        kind=KINDS[round_.kind],
        phase=PHASES[round_.phase],
        participants=round_.participants,
        reported=round_.reported,
        dropped=round_.dropped,
        reason=round_.reason,
        metrics=round_.metrics(),
        model_digest=round_.model_digest,
        started_unix=round_.started,
        finished_unix=round_.finished,
        model_version=round_.model_version,
        clients=[
            pb.ClientState(client_id=c.client_id, state=c.state.value, reason=c.reason)
            for c in round_.clients.values()
        ],
        min_clients=round_.min_clients,
        deadline_unix=round_.deadline,
        privacy=privacy_to_pb(round_.privacy),
        bytes_received=round_.bytes_received,
        aborted=bool(round_.aborted),
    )


def round_summary(round_: Round) -> pb.RoundSummary:
    """The round without its client lists: what GetStatus carries, the same size for any cohort."""
    return pb.RoundSummary(
        round=round_.number,
        kind=KINDS[round_.kind],
        phase=PHASES[round_.phase],
        reason=round_.reason,
        metrics=round_.metrics(),
        model_digest=round_.model_digest,
        model_version=round_.model_version,
        started_unix=round_.started,
        finished_unix=round_.finished,
        deadline_unix=round_.deadline,
        participants=len(round_.participants),
        reported=len(round_.reported),
        dropped=len(round_.dropped),
        min_clients=round_.min_clients,
        privacy=privacy_to_pb(round_.privacy),
        bytes_received=round_.bytes_received,
    )


def ready_page(ready: list[str], budget: int) -> list[str]:
    """The leading ids of the sorted `ready` list that fit in `budget` bytes on the wire."""
    page, size = [], 0
    for client_id in ready:
        size += len(client_id.encode()) + 3  # tag and length
        if size > budget:
            break
        page.append(client_id)
    return page


def page_size(asked: int, default: int, most: int, what: str) -> int:
    if asked > most:
        raise Refusal("INVALID_ARGUMENT", f"page_size {asked} is above the {most} {what} a page holds")
    return asked or default


def header_from_pb(header: pb.UpdateHeader) -> UploadHeader:
    return UploadHeader(
        header.training,
        header.client_id,
        header.round,
        header.num_examples,
        header.base_version,
        header.session,
    )


def privacy_to_pb(record: dict[str, Any] | None) -> pb.RoundPrivacy | None:
    if record is None:
        return None
    return pb.RoundPrivacy(
        mode=record["mode"],
        clip_norm=record["clipNorm"],
        noise_multiplier=record["noiseMultiplier"],
        effective_noise_multiplier=record["effectiveNoiseMultiplier"],
        expected_clients=record["expectedClients"],
        survivors=record["survivors"],
        max_update_norm=record["maxUpdateNorm"],
    )


class AggregatorServicer(pb_grpc.AggregatorServicer):
    def __init__(self, engine: RoundEngine, chunk_bytes: int, guard: Guard) -> None:
        self.engine = engine
        self.chunk_bytes = chunk_bytes
        self.guard = guard

    @refusals_to_status
    async def JoinRound(self, request: pb.JoinRequest, context: Context) -> pb.JoinReply:
        self.guard.client(context, request.client_id, request.site)
        got = await self.engine.join(
            request.training, request.client_id, request.session, request.wait_seconds, request.site
        )
        return pb.JoinReply(
            action=ACTIONS[got.action],
            round=got.round,
            model_version=got.model_version,
            model_digest=got.model_digest,
            deadline_unix=got.deadline,
            config=round_config_to_pb(got.config),
        )

    async def DownloadModel(self, request: pb.ModelRequest, context: Context) -> AsyncIterator[bytes]:
        """Streams the round's broadcast: `TensorChunk`s serialized once, sent as they are."""
        try:
            self.guard.client(context, request.client_id)
            broadcast, still_open = self.engine.model_for(request.training, request.client_id, request.round)
        except Refusal as refusal:
            await refuse(context, "DownloadModel", refusal)
        sent = 0
        try:
            for message in broadcast.messages():
                if not still_open():
                    await context.abort(
                        grpc.StatusCode.ABORTED, f"round {request.round} closed during the download"
                    )
                sent += len(message)
                yield message
        finally:  # a download cut short counts what was sent
            self.engine.accounts.sent(request.client_id, sent)

    @refusals_to_status
    async def UploadUpdate(
        self, request_iterator: AsyncIterator[UpdatePart], context: Context
    ) -> pb.UploadReply:
        """Messages arrive decoded by `wire.parse_update_message` (chunks without a data copy)."""
        first = await anext(aiter(request_iterator), None)
        if isinstance(first, Malformed):
            raise Refusal("INVALID_ARGUMENT", first.reason)
        if not isinstance(first, pb.UpdateHeader):
            raise Refusal("INVALID_ARGUMENT", "an upload starts with exactly one header message")
        self.guard.client(context, first.client_id)
        read = 0  # update data read from the stream, for the site's accounting

        async def chunks() -> AsyncIterator[Chunk]:
            nonlocal read
            async for message in request_iterator:
                if isinstance(message, Malformed):
                    raise Refusal("INVALID_ARGUMENT", message.reason)
                if not isinstance(message, Chunk):
                    raise Refusal("INVALID_ARGUMENT", "a second header in one upload")
                read += len(message.data)
                yield message

        try:
            received, reported = await self.engine.receive_update(header_from_pb(first), chunks())
        except Refusal:
            self.engine.accounts.upload(first.client_id, False, read)
            raise
        self.engine.accounts.upload(first.client_id, True, read)
        return pb.UploadReply(bytes_received=received, clients_reported=reported)

    @refusals_to_status
    async def SecAgg(self, request: pb.SecAggRequest, context: Context) -> pb.SecAggReply:
        self.guard.client(context, request.client_id)
        stage = SECAGG_STAGES.get(request.stage)
        if stage is None:
            raise Refusal("INVALID_ARGUMENT", "unknown SecAgg stage")
        payload, done = await self.engine.secagg(
            request.training, request.client_id, request.round, request.session, stage, request.payload
        )
        return pb.SecAggReply(payload=payload, done=done)

    @refusals_to_status
    async def ReportMetrics(self, request: pb.MetricsReport, context: Context) -> pb.MetricsAck:
        self.guard.client(context, request.client_id)
        phase = METRICS_PHASES.get(request.phase)
        if phase is None:
            raise Refusal("INVALID_ARGUMENT", "metrics phase must be TRAIN or EVALUATE")
        self.engine.report_metrics(
            request.training,
            request.client_id,
            request.round,
            phase,
            request.model_version,
            request.num_examples,
            {k: float(v) for k, v in request.metrics.items()},
        )
        return pb.MetricsAck()


READY_IN_STATUS_BYTES = 16 * 1024  # ready ids in GetStatus; ListReadyClients pages the rest
RECENT_ROUNDS = 2  # completed rounds GetStatus summarises: a round's evaluation lands in the next
ROUNDS_PAGE, MAX_ROUNDS_PAGE = 20, 100  # ListRounds: default and largest page_size
ROUNDS_PAGE_BYTES = 1024 * 1024  # a ListRounds page ends early past this: far below the message limit
READY_PAGE, MAX_READY_PAGE = 1000, 5000  # ListReadyClients: default and largest page_size
MAX_TOKEN_CHARACTERS = 256
MAX_REVOKED_SITES = 1000
MAX_SITE_CHARACTERS = 253
MAX_REVOKE_REASON = 200


class ControlServicer(pb_grpc.ControlServicer):
    def __init__(self, engine: RoundEngine, guard: Guard) -> None:
        self.engine = engine
        self.guard = guard

    @refusals_to_status
    async def StartRound(self, request: pb.StartRoundRequest, context: Context) -> pb.RoundState:
        self.guard.controller(context)
        kind = {pb.ROUND_KIND_TRAIN: Kind.TRAIN, pb.ROUND_KIND_EVALUATE: Kind.EVALUATE}.get(request.kind)
        if kind is None:
            raise Refusal("INVALID_ARGUMENT", "kind must be TRAIN or EVALUATE")
        if kind == Kind.TRAIN and 0 < request.round <= self.engine.model_version:
            done = self.engine.record_of(request.round)  # already done before a restart: report it
            if done is not None:
                return round_to_pb(done)
        return round_to_pb(
            self.engine.start_round(
                request.round,
                kind,
                list(request.participants),
                request.timeout_seconds,
                request.min_clients,
                population=request.accounting.population,
            )
        )

    async def WatchRound(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[pb.RoundState]:
        try:
            self.guard.controller(context)
        except Refusal as refusal:
            await refuse(context, "WatchRound", refusal)
        async for round_ in self.engine.watch(request.round):
            yield round_to_pb(round_)

    @refusals_to_status
    async def DropClient(self, request: pb.DropRequest, context: Context) -> pb.RoundState:
        self.guard.controller(context)
        return round_to_pb(self.engine.drop(request.round, request.client_id, request.reason))

    @refusals_to_status
    async def RevokeSites(self, request: pb.RevokeSitesRequest, context: Context) -> pb.RevokeSitesReply:
        """The whole set of revoked sites: their clients' calls are refused from now on (a join
        waiting now too), and those known here are dropped from the open round."""
        self.guard.controller(context)
        sites = list(request.sites)
        if len(sites) > MAX_REVOKED_SITES or any(len(s.site) > MAX_SITE_CHARACTERS for s in sites):
            raise Refusal(
                "INVALID_ARGUMENT",
                f"at most {MAX_REVOKED_SITES} sites of at most {MAX_SITE_CHARACTERS} characters",
            )
        revoked = {s.site: shorten(s.reason, MAX_REVOKE_REASON) or "revoked at the hub" for s in sites}
        added = revoked.keys() - self.guard.revoked.keys()
        self.guard.revoked = revoked
        clients = {
            cid: self.guard.why_revoked(site)
            for cid, site in self.guard.sites.items()
            if site in self.guard.revoked
        }
        dropped = self.engine.revoke_clients(clients)
        if added:
            reasons = sorted({revoked[site] for site in added})[:5]
            log.warning("sites.revoked", sites=sorted(added)[:20], clients=len(dropped), reasons=reasons)
        return pb.RevokeSitesReply(sites=sorted(revoked), dropped_clients=dropped)

    @refusals_to_status
    async def AbortRound(self, request: pb.AbortRequest, context: Context) -> pb.RoundState:
        self.guard.controller(context)
        return round_to_pb(await self.engine.abort(request.round, request.reason))

    @refusals_to_status
    async def GetStatus(self, request: pb.StatusRequest, context: Context) -> pb.AggregatorStatus:
        self.guard.controller(context)
        return await self.status()

    @refusals_to_status
    async def FinishTraining(self, request: pb.FinishRequest, context: Context) -> pb.AggregatorStatus:
        self.guard.controller(context)
        self.engine.finish()
        return await self.status()

    @refusals_to_status
    async def GetRound(self, request: pb.RoundRequest, context: Context) -> pb.RoundState:
        self.guard.controller(context)
        kind = Kind.EVALUATE if request.kind == pb.ROUND_KIND_EVALUATE else Kind.TRAIN
        current = self.engine.current
        if current is not None and current.number == request.round and current.kind == kind:
            return round_to_pb(current)
        done = self.engine.record_of(request.round) if kind == Kind.TRAIN else None
        if done is None:
            raise Refusal("NOT_FOUND", f"no {kind.value} round {request.round} is current or completed")
        return round_to_pb(done)

    @refusals_to_status
    async def ListRounds(self, request: pb.ListRoundsRequest, context: Context) -> pb.ListRoundsReply:
        """Completed training rounds in order, a page at a time; the token is the last round sent."""
        self.guard.controller(context)
        size = page_size(request.page_size, ROUNDS_PAGE, MAX_ROUNDS_PAGE, "rounds")
        after = 0
        if request.page_token:
            token = request.page_token
            if len(token) > MAX_TOKEN_CHARACTERS or not token.isdigit():
                raise Refusal("INVALID_ARGUMENT", "page_token is not one ListRounds gave")
            after = int(token)
        history = self.engine.history
        reply = pb.ListRoundsReply(total=len(history))
        records = history.after(after, size)
        for record in records:
            done = self.engine.record_of(int(record["round"]))
            if done is None:
                continue
            reply.rounds.append(round_to_pb(done))
            if reply.ByteSize() > ROUNDS_PAGE_BYTES:
                break  # a large cohort's rounds: fewer per page, never past the message limit
        if reply.rounds and history.after(reply.rounds[-1].round, 1):
            reply.next_page_token = str(reply.rounds[-1].round)
        return reply

    @refusals_to_status
    async def ListReadyClients(self, request: pb.ListReadyRequest, context: Context) -> pb.ListReadyReply:
        """Ready clients in id order, a page at a time; the token is the last id sent, so a
        client that arrives or leaves between pages moves nothing else."""
        self.guard.controller(context)
        size = page_size(request.page_size, READY_PAGE, MAX_READY_PAGE, "client ids")
        if len(request.page_token) > MAX_TOKEN_CHARACTERS:
            raise Refusal("INVALID_ARGUMENT", "page_token is not one ListReadyClients gave")
        ready = self.engine.ready_clients()
        start = bisect.bisect_right(ready, request.page_token) if request.page_token else 0
        page = ready[start : start + size]
        more = start + size < len(ready)
        return pb.ListReadyReply(
            client_ids=page, next_page_token=page[-1] if page and more else "", total=len(ready)
        )

    async def status(self) -> pb.AggregatorStatus:
        """Bounded: the current round and the last completed ones as summaries, the released
        DP records grouped (kept as rounds end, by `RoundHistory`), a page of ready clients, the
        figures of at most 1000 sites (written to the state directory before they are shown)."""
        engine = self.engine
        accounts = await engine.accounts.saved()
        ready = engine.ready_clients()
        recent = (engine.record_of(int(r["round"])) for r in engine.history.last(RECENT_ROUNDS))
        return pb.AggregatorStatus(
            training=engine.training,
            model_version=engine.model_version,
            model_digest=engine.model_digest,
            ready_clients=ready_page(ready, READY_IN_STATUS_BYTES),
            ready_count=len(ready),
            current=round_summary(engine.current) if engine.current is not None else None,
            recent=[round_summary(r) for r in recent if r is not None],
            released=[
                pb.ReleasedPrivacy(privacy=privacy_to_pb(group.privacy.to_record()), rounds=group.rounds)
                for group in engine.history.released
            ],
            finished=engine.finished,
            lineage_head=engine.ledger.head,
            lineage_public_key=engine.ledger.public_key_pem,
            lineage_key_fingerprint=engine.ledger.key_fingerprint,
            sites=[
                pb.SiteAccount(
                    site=site,
                    updates_accepted=f.updates_accepted,
                    updates_refused=f.updates_refused,
                    bytes_received=f.bytes_received,
                    bytes_sent=f.bytes_sent,
                    client_seconds=f.client_seconds,
                )
                for site, f in accounts.items()
            ],
        )


def add_aggregator_servicer(servicer: AggregatorServicer, server: grpc.aio.Server) -> None:
    """The generated registration, except the two bulk streams: uploads are decoded by
    `wire.parse_update_message` (zero-copy chunks) and downloads send pre-serialized bytes."""
    handler = grpc.method_handlers_generic_handler(
        "fedfleet.v1.Aggregator",
        {
            "JoinRound": grpc.unary_unary_rpc_method_handler(
                servicer.JoinRound, pb.JoinRequest.FromString, pb.JoinReply.SerializeToString
            ),
            "DownloadModel": grpc.unary_stream_rpc_method_handler(
                servicer.DownloadModel, pb.ModelRequest.FromString, None
            ),
            "UploadUpdate": grpc.stream_unary_rpc_method_handler(
                servicer.UploadUpdate, parse_update_message, pb.UploadReply.SerializeToString
            ),
            "ReportMetrics": grpc.unary_unary_rpc_method_handler(
                servicer.ReportMetrics, pb.MetricsReport.FromString, pb.MetricsAck.SerializeToString
            ),
            "SecAgg": grpc.unary_unary_rpc_method_handler(
                servicer.SecAgg, pb.SecAggRequest.FromString, pb.SecAggReply.SerializeToString
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))


def check_transport(address: str, tls: TlsFiles | None, insecure_local: bool) -> None:
    """mTLS, or plaintext on loopback when explicitly asked: never plaintext by omission."""
    if tls is not None and insecure_local:
        raise TlsConfigError("--insecure-local and --tls-* exclude each other")
    if tls is None and not insecure_local:
        raise TlsConfigError(
            "no TLS: give --tls-cert, --tls-key and --tls-ca "
            "(plaintext only with --insecure-local on a loopback --host)"
        )
    if tls is None and not is_loopback(address):
        raise TlsConfigError(f"--insecure-local serves loopback only, not {address}")


async def serve(
    engine: RoundEngine,
    address: str,
    chunk_bytes: int,
    ready: asyncio.Event | None = None,
    tls: TlsFiles | None = None,
    namespace: str = "default",
    insecure_local: bool = False,
) -> None:
    """Serve until cancelled or SIGTERM; health turns SERVING once the engine is loaded."""
    check_transport(address, tls, insecure_local)
    guard = Guard(None if tls is None else Policy(namespace, engine.training))
    server = grpc.aio.server(options=[*GRPC_OPTIONS, *ACCEPT_KEEPALIVES])
    add_aggregator_servicer(AggregatorServicer(engine, chunk_bytes, guard), server)
    pb_grpc.add_ControlServicer_to_server(ControlServicer(engine, guard), server)
    health = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if tls is None:
        log.warning("transport.plaintext", address=address, reason="--insecure-local: loopback only, no TLS")
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(tls))
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    watch = handshake_refusals(asyncio.get_running_loop()) if tls is not None else contextlib.nullcontext()
    with watch:
        await server.start()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        await health.set("fedfleet.v1.Aggregator", health_pb2.HealthCheckResponse.SERVING)
        log.info("aggregator.listening", address=address, port=port, mtls=tls is not None)
        if ready is not None:
            ready.set()
        try:
            await server.wait_for_termination()
        finally:
            await health.enter_graceful_shutdown()
            await server.stop(grace=2)
