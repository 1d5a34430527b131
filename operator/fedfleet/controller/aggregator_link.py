"""The operator's link to a training's aggregator: one mTLS channel per training (a renewed
controller certificate opens a new one), the project's message-size options, typed calls."""

from __future__ import annotations

import contextlib

import grpc

from fedfleet import convert
from fedfleet.chunks import GRPC_OPTIONS
from fedfleet.controller import core
from fedfleet.controller import resources as res
from fedfleet.controller.certificates import Certificates, fingerprint
from fedfleet.identity.credentials import channel_credentials, channel_options
from fedfleet.identity.names import server_name
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc

STATUS_TIMEOUT_SECONDS = 3.0
CALL_TIMEOUT_SECONDS = 10.0


class AggregatorLink:
    def __init__(self, certificates: Certificates) -> None:
        self.certificates = certificates
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._retired: list[grpc.aio.Channel] = []

    def control(self, ref: res.TrainingRef, address: str) -> pb_grpc.ControlStub:
        """mTLS as the training's controller identity (Certificates.ensure ran this pass)."""
        bundle = self.certificates.controller_bundle(ref)
        key = (address, fingerprint(bundle))
        if key not in self._channels:
            for stale in [k for k in self._channels if k[0] == address]:
                self._retired.append(self._channels.pop(stale))  # its calls may still be running
            self._channels[key] = grpc.aio.secure_channel(
                address,
                channel_credentials(bundle.cert_pem, bundle.key_pem, bundle.ca_pem),
                options=[*GRPC_OPTIONS, *channel_options(server_name(ref.name, ref.namespace))],
            )
        return pb_grpc.ControlStub(self._channels[key])

    async def status(self, stub: pb_grpc.ControlStub) -> pb.AggregatorStatus:
        reply: pb.AggregatorStatus = await stub.GetStatus(pb.StatusRequest(), timeout=STATUS_TIMEOUT_SECONDS)
        return reply

    async def start_round(self, stub: pb_grpc.ControlStub, action: core.StartRound) -> pb.RoundState:
        state: pb.RoundState = await stub.StartRound(
            convert.start_round_request(action), timeout=CALL_TIMEOUT_SECONDS
        )
        return state

    async def drop(self, stub: pb_grpc.ControlStub, number: int, client: str, reason: str) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # not a participant of that round, or it is over
            await stub.DropClient(pb.DropRequest(round=number, client_id=client, reason=reason), timeout=5)

    async def finish(self, stub: pb_grpc.ControlStub) -> None:
        await stub.FinishTraining(pb.FinishRequest(), timeout=CALL_TIMEOUT_SECONDS)

    async def forget(self, address: str) -> None:
        """Close the channels to an aggregator whose training has ended."""
        for key in [k for k in self._channels if k[0] == address]:
            await self._channels.pop(key).close(grace=None)

    async def close(self) -> None:
        for channel in [*self._channels.values(), *self._retired]:
            await channel.close(grace=None)
        self._channels.clear()
        self._retired.clear()
