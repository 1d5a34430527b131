"""'Did you mean' for a manifest key nothing knows: the closest keys the spec allows there."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (X, X | None, list[X], dict[str, X])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, dict, tuple):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model whose keys are valid at `loc` (the path of the key's parent)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue  # an index into a list of models: same model
        by_alias = {f.alias or name: f for name, f in model.model_fields.items()}
        field = by_alias.get(part) or model.model_fields.get(part)
        if field is None:
            return None
        candidates = _models_in(field.annotation)
        model = candidates[0] if candidates else None
    return model


def known_keys(root: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    model = _model_at(root, loc)
    if model is None:
        return []
    return sorted(f.alias or name for name, f in model.model_fields.items())


def did_you_mean(root: type[BaseModel], loc: Sequence[int | str]) -> str:
    """' (did you mean rounds?)' for the unknown key at loc, or '' when nothing is close."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    key, keys = loc[-1], known_keys(root, loc[:-1])
    close = difflib.get_close_matches(key, keys, n=2, cutoff=0.6)
    if not close:
        folded = {k.lower(): k for k in keys}  # roundtimeoutseconds, round_timeout_seconds
        plain = key.lower().replace("_", "").replace("-", "")
        close = [folded[plain]] if plain in folded else []
    return f"; did you mean {' or '.join(close)}?" if close else ""
