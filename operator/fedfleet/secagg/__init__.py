"""SecAgg+ secure aggregation (Bell et al. 2020, after Bonawitz et al. 2017).

The aggregator learns only the sum of the updates of the clients that survive a round. Per round:

    client                                   aggregator (SecAggServer)
    c = SecAggClient(training, round, id, params)
    c.advertise()                  ------>   add_keys(id, payload); close_keys() when all or late
    c.share_keys(neighbours)       <------   neighbours_payload(id)
                                   ------>   add_shares(id, payload); close_shares()
    c.receive_shares(shares)       <------   shares_payload(id)
    words = c.mask_update(delta, weight)     (uint32, len M + 1; streamed in chunks and summed mod 2^32)
                                   ------>   check_input(id) before folding; close_inputs(uploaded)
    c.reveal(request)              <------   request_for(id)
                                   ------>   add_reveal(id, payload)
                                             unmask(sum) -> (weighted sum, total weight)

Masks are AES-128-CTR keystreams (masks.py); keys are X25519 + HKDF; shares are Shamir t-of-k
over GF(2^521-1), sent AES-GCM-encrypted between neighbours of a random k-regular graph.
"""

from fedfleet.secagg.client import SecAggClient
from fedfleet.secagg.crypto import ProtocolError
from fedfleet.secagg.params import SecAggParams
from fedfleet.secagg.server import SecAggAbort, SecAggServer

MASKED_TENSOR = "secagg.masked"  # the one tensor of a masked upload: M update words, then one weight word

__all__ = ["MASKED_TENSOR", "ProtocolError", "SecAggAbort", "SecAggClient", "SecAggParams", "SecAggServer"]
