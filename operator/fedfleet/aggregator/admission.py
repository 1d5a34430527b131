"""What the aggregator admits: every check on a request or a chunk before it touches any state.

Pure functions over the round's bookkeeping and plain values; each failed check is a
`Refusal` with its own status code and a message that names the flaw (never echoing the
caller's data beyond a name). The engine calls these first and acts only on what passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedfleet.aggregator.layout import ModelLayout, TensorSlot
from fedfleet.aggregator.rounds import ClientPhase, ClientRecord, Kind, Round
from fedfleet.chunks import Chunk, verify_crc
from fedfleet.compression import BITS_OF, decode_chunk
from fedfleet.refusal import Refusal
from fedfleet.text import shorten

MAX_METRICS = 64  # metrics per report: one report is kept in every round's history
MAX_METRIC_NAME = 64  # characters of a metric name
MAX_REPORT_BYTES = 8 * 1024  # names and values of one report together


@dataclass(frozen=True)
class UploadHeader:
    """The first message of an upload, as plain values."""

    training: str
    client_id: str
    round: int
    num_examples: int
    base_version: int
    session: str


def all_finite(values: np.ndarray) -> bool:
    """No NaN or Inf. min and max propagate NaN and reach +-Inf: two reductions and no
    temporary (an `isfinite` mask of a model-sized sum would be a quarter model more memory)."""
    return values.size == 0 or bool(np.isfinite(values.min()) and np.isfinite(values.max()))


def check_training(served: str, asked: str) -> None:
    if asked != served:
        raise Refusal(
            "PERMISSION_DENIED", f"this aggregator serves training {served!r}, not {shorten(repr(asked))}"
        )


def check_round_request(
    kind: Kind, number: int, model_version: int, participants: list[str], timeout: float, min_clients: int
) -> None:
    """A StartRound the engine may act on (the caller has ruled out a retry of the open round)."""
    expected = model_version + 1 if kind == Kind.TRAIN else model_version
    if number != expected:
        raise Refusal(
            "FAILED_PRECONDITION",
            f"cannot start {kind.value} round {number}: the model is at version {model_version}, "
            f"the next {kind.value} round is {expected}",
        )
    if not participants or len(set(participants)) != len(participants):
        raise Refusal("INVALID_ARGUMENT", "participants must be a non-empty list of distinct client ids")
    if not 1 <= min_clients <= len(participants):
        raise Refusal("INVALID_ARGUMENT", f"min_clients {min_clients} must be within 1..{len(participants)}")
    if not timeout > 0:
        raise Refusal("INVALID_ARGUMENT", "timeout_seconds must be positive")


def open_round(current: Round | None, number: int) -> Round:
    """The round `number` if it is the current one and still takes client work."""
    if current is None or current.number != number:
        open_now = f"round {current.number} is" if current is not None and current.is_open else "no round is"
        raise Refusal("FAILED_PRECONDITION", f"round {number} is not open ({open_now} open)")
    if not current.is_open:
        raise Refusal("FAILED_PRECONDITION", f"late: round {number} is closed ({current.phase.value})")
    return current


def participant(round_: Round, client_id: str) -> ClientRecord:
    record = round_.clients.get(client_id)
    if record is None:
        raise Refusal(
            "PERMISSION_DENIED",
            f"client {shorten(repr(client_id))} is not a participant of round {round_.number}",
        )
    if record.state == ClientPhase.DROPPED:
        raise Refusal(
            "FAILED_PRECONDITION",
            f"client {client_id!r} was dropped from round {round_.number}: {record.reason}",
        )
    return record


def check_metrics(metrics: dict[str, float], num_examples: int, max_examples: int) -> None:
    """A report small enough to keep in every round's status (a huge one would make GetStatus
    exceed the send limit for good): few metrics, short names, finite values."""
    if len(metrics) > MAX_METRICS:
        raise Refusal("RESOURCE_EXHAUSTED", f"{len(metrics)} metrics in one report; at most {MAX_METRICS}")
    size = 0
    for name, value in metrics.items():
        if not 0 < len(name) <= MAX_METRIC_NAME:
            raise Refusal(
                "INVALID_ARGUMENT",
                f"metric name {shorten(repr(name), 40)} has {len(name)} characters; 1..{MAX_METRIC_NAME}",
            )
        if not math.isfinite(value):
            raise Refusal("INVALID_ARGUMENT", f"metric {name!r} is not a finite number")
        size += len(name.encode()) + 8
    if size > MAX_REPORT_BYTES:
        raise Refusal("RESOURCE_EXHAUSTED", f"a report of {size} bytes; at most {MAX_REPORT_BYTES}")
    check_examples(num_examples, max_examples)


def check_examples(num_examples: int, max_examples: int) -> None:
    """num_examples weighs an update: an absurd count would let one client take over FedAvg."""
    if num_examples > max_examples:
        raise Refusal(
            "INVALID_ARGUMENT",
            f"num_examples {num_examples} exceeds spec.updates.maxExamples {max_examples}",
        )


def check_update_norm(norm: float, bound: float) -> None:
    """A plaintext update beyond spec.updates.maxUpdateNorm (when set) is refused whole."""
    if bound and not norm <= bound:
        raise Refusal(
            "INVALID_ARGUMENT", f"update L2 norm {norm:.6g} exceeds spec.updates.maxUpdateNorm {bound:g}"
        )


def check_upload(round_: Round, record: ClientRecord, header: UploadHeader, max_examples: int) -> None:
    """An upload may start: a training round, a participant that has not reported, its session."""
    if round_.kind != Kind.TRAIN:
        raise Refusal("FAILED_PRECONDITION", f"round {round_.number} is an evaluation round: no updates")
    if record.state == ClientPhase.REPORTED:
        raise Refusal(
            "ALREADY_EXISTS", f"client {header.client_id!r} already reported for round {round_.number}"
        )
    if record.state == ClientPhase.UPLOADING:
        raise Refusal(
            "ALREADY_EXISTS", f"client {header.client_id!r} is already uploading for round {round_.number}"
        )
    if record.session is not None and header.session != record.session:
        raise Refusal("PERMISSION_DENIED", f"client {header.client_id!r}: upload from another session")
    if header.base_version != round_.model_version:
        raise Refusal(
            "FAILED_PRECONDITION",
            f"update computed from model version {header.base_version}, "
            f"round {round_.number} trains version {round_.model_version}",
        )
    if header.num_examples == 0:
        raise Refusal("INVALID_ARGUMENT", "num_examples must be positive")
    check_examples(header.num_examples, max_examples)


def check_clipped(norm: float, clip_norm: float) -> None:
    """A plaintext DP update beyond clipNorm is refused: the noise is calibrated to that bound."""
    if norm > clip_norm:
        raise Refusal(
            "INVALID_ARGUMENT",
            f"update L2 norm {norm:.6g} exceeds spec.privacy.clipNorm {clip_norm:g}; clip before uploading",
        )


class ChunkCheck:
    """Checks one upload's chunks against the model layout: name, dtype, shape, CRC, order,
    bounds, finiteness; tracks how much of each tensor arrived, so completeness is checkable."""

    def __init__(self, layout: ModelLayout, wire: str | None = None) -> None:
        """`wire`: the quantized dtype (q16, q8, q4) float32 tensors must arrive in, if any."""
        self.layout = layout
        self.wire = wire
        self.filled = dict.fromkeys(layout.slots, 0)
        self.bytes_received = 0

    def values(self, chunk: Chunk) -> tuple[TensorSlot, int, np.ndarray]:
        """(slot, first element in the flat vector, the chunk's values) once every check passed.
        Plain chunks come back as a read-only view of the chunk's bytes, not a copy."""
        slot = self.layout.slots.get(chunk.name)
        if slot is None:
            raise Refusal("INVALID_ARGUMENT", f"unknown tensor {shorten(repr(chunk.name))}")
        wanted = self.wire if self.wire is not None and slot.dtype == np.float32 else slot.dtype.name
        if chunk.dtype != wanted:
            raise Refusal(
                "INVALID_ARGUMENT",
                f"tensor {chunk.name!r}: dtype {shorten(chunk.dtype, 20)}, expected {wanted}"
                + (f" (spec.compression.bits is {BITS_OF[wanted]})" if wanted in BITS_OF else ""),
            )
        if chunk.shape != slot.shape:
            raise Refusal(
                "INVALID_ARGUMENT",
                f"tensor {chunk.name!r}: shape {shorten(list(chunk.shape), 40)}, expected {list(slot.shape)}",
            )
        verify_crc(chunk)
        expected = self.filled[chunk.name]
        if chunk.offset != expected:
            raise Refusal(
                "INVALID_ARGUMENT",
                f"tensor {chunk.name!r}: chunk at byte {chunk.offset}, expected byte {expected} "
                "(chunks of a tensor arrive once, in order)",
            )
        itemsize = slot.dtype.itemsize
        if wanted in BITS_OF:
            values = decode_chunk(chunk, (slot.nbytes - chunk.offset) // itemsize)
        else:
            size = len(chunk.data)
            if size % itemsize:
                raise Refusal(
                    "INVALID_ARGUMENT", f"tensor {chunk.name!r}: chunk of {size} bytes splits a value"
                )
            end = chunk.offset + size
            if end > slot.nbytes:
                raise Refusal(
                    "OUT_OF_RANGE",
                    f"tensor {chunk.name!r}: chunk ends at byte {end}, tensor has {slot.nbytes}",
                )
            values = np.frombuffer(chunk.data, dtype=slot.dtype)
        if values.dtype.kind == "f" and not all_finite(values):
            raise Refusal(
                "INVALID_ARGUMENT", f"tensor {chunk.name!r}: NaN or Inf in chunk at byte {chunk.offset}"
            )
        return slot, slot.start + chunk.offset // itemsize, values

    def accept(self, chunk: Chunk, values: np.ndarray) -> None:
        """Count a chunk whose values went where `values()` said."""
        self.filled[chunk.name] = chunk.offset + values.nbytes
        self.bytes_received += len(chunk.data) + len(chunk.scales)

    def check_complete(self) -> None:
        for name, filled in self.filled.items():
            total = self.layout.slots[name].nbytes
            if filled != total:
                raise Refusal(
                    "INVALID_ARGUMENT", f"incomplete update: tensor {name!r} has {filled} of {total} bytes"
                )
