"""A site's governance check: it trains only base models its FederationSite policy allows.

The operator passes `policy.allowedBaseDigests` to the site's client pods
(`--allowed-base-digest`); the client checks before it joins any round and, when refused, exits
with `REFUSED_EXIT_CODE` after writing the reason where Kubernetes shows it (the container's
termination message). The operator records that reason as the client's state and does not
restart it: a policy does not change by retrying.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.provenance.base import base_model_digest

REFUSED_EXIT_CODE = 78  # EX_CONFIG: the job is misconfigured for this site, not failing
TERMINATION_LOG = "/dev/termination-log"


class PolicyRefusal(Exception):
    """This site's policy does not allow the training's base model; the message says why."""


def check_base_model(spec: FederatedTrainingSpec, allowed: list[str]) -> None:
    """Raises PolicyRefusal unless `allowed` is empty or holds the training's base digest."""
    if not allowed:
        return
    digest = base_model_digest(spec)
    if digest is None:
        raise PolicyRefusal(
            "site policy allowedBaseDigests: the training pins no base model (spec.model.digest is empty), "
            "so this site cannot tell which model it would train"
        )
    if digest not in allowed:
        raise PolicyRefusal(
            f"site policy allowedBaseDigests: base model {digest} is not allowed "
            f"(allowed: {', '.join(allowed)})"
        )


def write_termination_message(message: str) -> None:
    """Best effort: Kubernetes copies this file into the pod's status; nothing else reads it."""
    path = Path(os.environ.get("FEDFLEET_TERMINATION_LOG", TERMINATION_LOG))
    with contextlib.suppress(OSError):
        path.write_text(message[:4000])
