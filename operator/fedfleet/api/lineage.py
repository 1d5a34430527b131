"""`spec.lineage`: how a training's lineage records name the clients that contributed."""

from __future__ import annotations

from pydantic import Field

from fedfleet.api.base import SpecModel


class LineageSpec(SpecModel):
    pseudonymize: bool = Field(
        default=False,
        description="Record salted pseudonyms instead of client ids; the salt stays in the state dir.",
    )
