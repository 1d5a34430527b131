"""`spec.release`: where the trained model goes when the training succeeds."""

from __future__ import annotations

from pydantic import Field

from fedfleet.api.base import SpecModel

OCI_REFERENCE = r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$"


class OciRelease(SpecModel):
    reference: str = Field(
        pattern=OCI_REFERENCE,
        description="registry/repository:tag the model is pushed to as an OCI artifact.",
    )
    insecure: bool = Field(
        default=False, description="Plain HTTP to the registry (a loopback or test registry only)."
    )
    credentials_secret: str = Field(
        default="",
        max_length=253,
        description="A kubernetes.io/dockerconfigjson Secret in the training's namespace with the "
        "registry's push credentials, mounted only into the operator's release pod.",
    )


class ReleaseSpec(SpecModel):
    """The final model, its lineage, public key and model card, with a signed attestation."""

    oci: OciRelease | None = Field(default=None, description="Push to an OCI registry; unset: no release.")
