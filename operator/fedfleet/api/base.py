"""Shared pydantic base: camelCase on the wire (as Kubernetes manifests are), unknown keys refused."""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    """Base of every manifest block: a typo in a key is an error, not a silently ignored field."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )
