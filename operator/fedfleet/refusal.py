"""A refused request: a gRPC status code name and a message that says exactly what was wrong.

Pure code (round engine, update validation) raises it; the gRPC layer turns it into a status,
so the logic stays free of grpc imports and its tests stay fast.
"""

from __future__ import annotations

from typing import Literal

Code = Literal[
    "INVALID_ARGUMENT",
    "FAILED_PRECONDITION",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "DEADLINE_EXCEEDED",
    "DATA_LOSS",
    "OUT_OF_RANGE",
    "NOT_FOUND",
    "ABORTED",
    "RESOURCE_EXHAUSTED",
    "UNAUTHENTICATED",
]


class Refusal(Exception):
    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code: Code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
