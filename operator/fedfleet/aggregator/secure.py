"""One round's SecAgg+ on the aggregator: stage deadlines and long-polls around the protocol server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fedfleet.api.training import SecureAggregationSpec
from fedfleet.refusal import Refusal
from fedfleet.round_config import SecAggSettings
from fedfleet.secagg import ProtocolError, SecAggAbort, SecAggParams, SecAggServer, Verifier
from fedfleet.secagg.params import lane_for

LONG_POLL_SECONDS = 30.0
ADVERTISE_KEYS, SHARE_KEYS, CONSISTENCY, UNMASK = "advertise_keys", "share_keys", "consistency", "unmask"


class SecureRound:
    def __init__(
        self,
        training: str,
        number: int,
        participants: list[str],
        spec: SecureAggregationSpec,
        deadline: float,
        bits: int = 32,
        verifier: Verifier | None = None,
        now: float | None = None,
    ) -> None:
        """`bits` (spec.compression.bits) picks the lane: the narrowest that n codes of `bits`
        bits fit (bits + ceil(log2 n)); the code then takes every level that lane leaves.
        `verifier` (the training's CA) checks each advertisement's signature on receipt. The
        attempt is the start time in ns: a retried round number is a new, later attempt.
        `now`: the engine's clock at the start (deadlines are in its time)."""
        if len(participants) < 3:
            raise Refusal("INVALID_ARGUMENT", "secure aggregation needs at least 3 participants")
        self.params = SecAggParams.build(
            len(participants),
            spec.neighbours,
            spec.threshold_ratio,
            spec.clip_range,
            spec.max_weight,
            lane=lane_for(0 if bits >= 32 else bits, len(participants)),
            dropout=spec.dropout_rate,
            failure_probability=spec.failure_probability,
        )
        self.attempt = time.time_ns()
        self.server = SecAggServer(
            training, number, participants, self.params, verifier=verifier, attempt=self.attempt
        )
        # no stage may outlast the round: a quarter of the round at most for each key-exchange stage
        self.stage_timeout = min(
            spec.stage_timeout_seconds, max(1.0, (deadline - (time.time() if now is None else now)) / 4)
        )
        self.participants = set(participants)
        self.gone: set[str] = set()
        self.abort_reason = ""
        self._changed = asyncio.Event()
        self._deadlines = asyncio.create_task(self._close_stages_at_deadlines())

    def settings(self) -> SecAggSettings:
        """What each participant is told: the parameters it must build, and this attempt."""
        return SecAggSettings.of(self.params, self.attempt)

    # -- waiting -------------------------------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, done: Any, timeout: float) -> bool:
        until = time.monotonic() + timeout
        while not done() and not self.abort_reason:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return not self.abort_reason

    def _abort(self, err: SecAggAbort) -> None:
        self.abort_reason = f"secure aggregation aborted: {err}"
        self._notify()

    def _close(self, closer: Any) -> None:
        try:
            closer()
        except SecAggAbort as err:
            self._abort(err)
        self._notify()

    async def _close_stages_at_deadlines(self) -> None:
        server = self.server
        if (
            not await self._wait(lambda: server.stage != "keys", self.stage_timeout)
            and server.stage == "keys"
        ):
            self._close(server.close_keys)
        if (
            not await self._wait(lambda: server.stage != "shares", self.stage_timeout)
            and server.stage == "shares"
        ):
            self._close(server.close_shares)

    def _all_in(self, arrived: set[str], expected: set[str]) -> bool:
        return arrived >= expected - self.gone

    def drop(self, client: str) -> None:
        """The controller saw this client go: stop waiting for it in the key-exchange stages."""
        self.gone.add(client)
        server = self.server
        if server.stage == "keys" and server.keys and self._all_in(set(server.keys), self.participants):
            self._close(server.close_keys)
        elif server.stage == "shares" and self._all_in(set(server.sealed), set(server.graph)):
            self._close(server.close_shares)
        self._notify()

    def cancel(self) -> None:
        self._deadlines.cancel()

    def _refuse_if_aborted(self) -> None:
        if self.abort_reason:
            raise Refusal("ABORTED", self.abort_reason)

    # -- the client exchange ---------------------------------------------------------------------
    async def exchange(self, stage: str, client: str, payload: bytes) -> tuple[bytes, bool]:
        """One SecAgg request: returns (reply payload, done). Waits for the stage to close."""
        self._refuse_if_aborted()
        server = self.server
        try:
            if stage == ADVERTISE_KEYS:
                server.add_keys(client, payload)
                if self._all_in(set(server.keys), self.participants):
                    self._close(server.close_keys)
                self._notify()
                await self._wait(lambda: server.stage != "keys", self.stage_timeout + 5)
                self._refuse_if_aborted()
                return server.neighbours_payload(client), True
            if stage == SHARE_KEYS:
                server.add_shares(client, payload)
                if self._all_in(set(server.sealed), set(server.graph)):
                    self._close(server.close_shares)
                self._notify()
                await self._wait(lambda: server.stage != "shares", self.stage_timeout + 5)
                self._refuse_if_aborted()
                return server.shares_payload(client), True
            if stage == UNMASK and not payload:
                ready = await self._wait(lambda: server.stage not in ("inputs",), LONG_POLL_SECONDS)
                self._refuse_if_aborted()
                return (server.survivors_for(client), False) if ready else (b"", False)
            if stage == CONSISTENCY:
                server.add_endorsements(client, payload)
                self._notify()
                await self._wait(lambda: server.stage != "consistency", self.stage_timeout + 5)
                self._refuse_if_aborted()
                return server.endorsements_for(client), False
            if stage == UNMASK:
                server.add_reveal(client, payload)
                self._notify()
                return b"", True
        except ProtocolError as err:
            raise Refusal(err.code, str(err)) from None  # type: ignore[arg-type]
        raise Refusal("INVALID_ARGUMENT", "unknown SecAgg stage")

    async def unmask(self, summed: Any, uploaded: set[str]) -> tuple[Any, float]:
        """Close inputs, wait for the survivors' endorsements, then for reveals (each until all
        or the stage deadline), remove the masks."""
        self._refuse_if_aborted()
        try:
            self.server.close_inputs(uploaded)
            self._notify()
            await self._wait(lambda: self.server.all_endorsed, self.stage_timeout)
            self.server.close_consistency()
            self._notify()
            await self._wait(lambda: self.server.all_revealed, self.stage_timeout)
            return self.server.unmask(summed)
        except SecAggAbort as err:
            self._abort(err)
            raise
