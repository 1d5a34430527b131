"""The operator's link to a training's aggregator: one mTLS channel per training (a renewed
controller certificate opens a new one) with the project's message-size options, handed out
as the round driver's aggregator port (`rounds/control.py`: typed calls, domain replies)."""

from __future__ import annotations

import grpc

from fedfleet.chunks import GRPC_OPTIONS
from fedfleet.controller import resources as res
from fedfleet.controller.certificates import Certificates, fingerprint
from fedfleet.identity.credentials import channel_credentials, channel_options
from fedfleet.identity.names import server_name
from fedfleet.rounds.control import ControlAggregator
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc


class AggregatorLink:
    def __init__(self, certificates: Certificates) -> None:
        self.certificates = certificates
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._retired: list[grpc.aio.Channel] = []

    def aggregator(self, ref: res.TrainingRef, address: str, population: int) -> ControlAggregator:
        """mTLS as the training's controller identity (Certificates.ensure ran this pass);
        `population`: the clients cohorts are drawn from, sent with every StartRound."""
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
        return ControlAggregator(pb_grpc.ControlStub(self._channels[key]), population=population)

    async def forget(self, address: str) -> None:
        """Close the channels to an aggregator whose training has ended."""
        for key in [k for k in self._channels if k[0] == address]:
            await self._channels.pop(key).close(grace=None)

    async def close(self) -> None:
        for channel in [*self._channels.values(), *self._retired]:
            await channel.close(grace=None)
        self._channels.clear()
        self._retired.clear()
