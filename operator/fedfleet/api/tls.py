"""`spec.tls`: the training's identities and transport security (see docs/trust.md)."""

from __future__ import annotations

from pydantic import Field

from fedfleet.api.base import SpecModel


class TlsSpec(SpecModel):
    enabled: bool = Field(
        default=True,
        description="mTLS between clients, controller and aggregator. A cluster always uses it; "
        "false is for `fedfleet local run` only (plaintext on loopback).",
    )
    issuer_secret: str = Field(
        default="",
        max_length=253,
        description="Secret (training's namespace) with tls.crt/tls.key of a CA to issue from, "
        "cert-manager layout; empty: the operator generates a CA per training.",
    )
    certificate_lifetime_hours: int = Field(
        default=720, ge=1, le=24 * 3650, description="Leaf certificate lifetime; renewed at a third left."
    )
