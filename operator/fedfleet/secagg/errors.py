"""What SecAgg+ refuses and when it gives up.

Refusals are `ProtocolError` subclasses, one per cause, each carrying the gRPC status name the
transport should answer with (`code`), so the data plane maps them without string matching.
A refusal never changes protocol state. `SecAggAbort` is different: the round cannot finish
securely (too few clients or shares), and nothing derived from the masked inputs is released.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """A SecAgg+ message or call that must be refused; state is unchanged."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedMessage(ProtocolError):
    """Bytes that do not decode to the expected message (truncated, wrong kind, bad field)."""


class OversizedMessage(ProtocolError):
    """A message, list or chunk beyond the sizes this round allows."""

    code = "RESOURCE_EXHAUSTED"


class WrongBinding(ProtocolError):
    """A message bound to another training, round or recipient (a replay from elsewhere)."""

    code = "FAILED_PRECONDITION"


class NotAuthorized(ProtocolError):
    """A sender that is not a participant, or that speaks for another client."""

    code = "PERMISSION_DENIED"


class AuthenticationFailed(ProtocolError):
    """An encrypted share whose AES-GCM tag does not verify, or an unusable public key."""

    code = "PERMISSION_DENIED"


class ReplayedMessage(ProtocolError):
    """A message or chunk this round already accepted (duplicate, replay, overlapping words)."""

    code = "ALREADY_EXISTS"


class OutOfOrder(ProtocolError):
    """A step taken before its stage opened or after it closed."""

    code = "FAILED_PRECONDITION"


class ForbiddenReveal(ProtocolError):
    """A reveal of a share kind the survivor set does not allow (or of both kinds of one client)."""

    code = "PERMISSION_DENIED"


class InconsistentView(ProtocolError):
    """The aggregator showed this client a survivor set its neighbours do not vouch for (or one
    that cannot be true): the client reveals nothing this round."""

    code = "FAILED_PRECONDITION"


class SecAggAbort(RuntimeError):
    """The round cannot be completed securely; nothing derived from the inputs is released."""
