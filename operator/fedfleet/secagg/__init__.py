"""SecAgg+ secure aggregation (Bell et al. 2020, after Bonawitz et al. 2017), transport-free.

The aggregator learns only the sum of the weighted updates of the clients that complete a
round, and their total weight. Each message is opaque bytes for the gRPC layer; the transport
must tell the server which (authenticated) client sent it. Call sequence per round:

    client (one per participant)                    aggregator
    c = SecAggClient(training, rnd, id, params,     s = SecAggServer(training, rnd, ids, params,
                     long_term=, verifier=)                             dimension=M, verifier=)
    c.advertise()                        ------->   s.add_keys(id, payload)
                                                    s.close_keys()     # all_advertised, or deadline
    c.share_keys(payload)                <-------   s.neighbours_payload(id)
                                         ------->   s.add_shares(id, payload)
                                                    s.close_shares()   # all_shared, or deadline
    c.receive_shares(payload)            <-------   s.shares_payload(id)
    c.start_upload(M, weight)                       # train first; weight = example count
    for offset, chunk in float32 chunks of the flat update (tensors sorted by name):
        words = c.mask_chunk(offset, chunk)  --->   s.add_chunk(id, offset, words)  # bytes are ok too
    c.weight_words()   (words [M, M+W))  ------->   s.add_chunk(id, M, words)
                                                    s.close_inputs()   # everyone done, or deadline
    c.endorse(payload)                   <-------   s.survivors_for(id)     # U3, the same for all
                                         ------->   s.add_endorsements(id, payload)
                                                    s.close_consistency()   # all_endorsed, or deadline
    c.reveal(payload)                    <-------   s.endorsements_for(id)  # >= t must vouch for U3
                                         ------->   s.add_reveal(id, payload)
                                                    values, weight = s.unmask()  # all_revealed, or deadline

`values` (float32, M; a view of the accumulator) is sum_u w_u * clip(x_u) and `weight` is
sum_u w_u (w_u capped at max_weight), so the FedAvg mean is values / weight. `add_chunk` takes
the client id to refuse overlapping or replayed words and to know whose upload is complete;
chunks may arrive in any order and size (`np.frombuffer` on the received bytes: no copy).
`mask_chunk(offset, chunk, out=chunk.view(np.uint32))` masks in place (32-bit lanes). Pass
`accumulator=` (`params.lane_dtype`, M + W) to reuse the aggregator's buffer across rounds.
Words are uint32 lanes unless `params.lane` (or `bits`) makes them uint16 or uint8: narrower
uploads, every sum mod 2^lane (`lane_for(bits, n)` in `params.py`).

`long_term` (a per-process key signed by the client's identity key) and `verifier` (the
training's CA) authenticate every advertisement: see `authentication.py`. Without them the protocol runs with
ephemeral keys and holds only against an honest-but-curious aggregator.

A refusal raises a `ProtocolError` subclass with `.code` (a gRPC status name) and changes
nothing; `SecAggAbort` means the round cannot finish securely and nothing is released (also
raised by a close_* call). `c.mask_update(flat, weight)` and `s.unmask(summed)` remain for
callers that sum the M + W words themselves (then `s.close_inputs(uploaded_ids)`).
"""

from fedfleet.secagg.authentication import LongTermKey, Signer, Verifier
from fedfleet.secagg.client import SecAggClient
from fedfleet.secagg.errors import (
    AuthenticationFailed,
    ForbiddenReveal,
    InconsistentView,
    MalformedMessage,
    NotAuthorized,
    OutOfOrder,
    OversizedMessage,
    ProtocolError,
    ReplayedMessage,
    SecAggAbort,
    WrongBinding,
)
from fedfleet.secagg.params import WEIGHT_WORDS, SecAggParams
from fedfleet.secagg.server import SecAggServer

MASKED_TENSOR = "secagg.masked"  # the one tensor of a masked upload: M update words, then W weight words

__all__ = [
    "MASKED_TENSOR",
    "WEIGHT_WORDS",
    "AuthenticationFailed",
    "ForbiddenReveal",
    "InconsistentView",
    "LongTermKey",
    "MalformedMessage",
    "NotAuthorized",
    "OutOfOrder",
    "OversizedMessage",
    "ProtocolError",
    "ReplayedMessage",
    "SecAggAbort",
    "SecAggClient",
    "SecAggParams",
    "SecAggServer",
    "Signer",
    "Verifier",
    "WrongBinding",
]
