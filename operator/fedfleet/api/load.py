"""Reading manifests: YAML or JSON in, a validated FederatedTraining out, or one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fedfleet.api.suggest import did_you_mean
from fedfleet.api.training import FederatedTraining


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the field."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
        elif not item.startswith("function-") and item not in ("FederatedTraining",):
            parts.append(item)
    return ".".join(parts) or "(document)"


def format_validation_error(
    err: ValidationError, source: str, root: type[BaseModel] = FederatedTraining
) -> str:
    """One line per issue: `SOURCE: field.path: message`, with 'did you mean' for unknown keys
    (`root` is the model the paths start from)."""
    lines = []
    for issue in err.errors(include_url=False):
        where = _field_path(tuple(issue["loc"]))
        message = issue["msg"].removeprefix("Value error, ")
        got = issue.get("input")
        shown = (
            "" if issue["type"] in ("missing", "model_type") or isinstance(got, dict) else f" (got {got!r})"
        )
        if issue["type"] == "extra_forbidden":
            loc = [p for p in issue["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            shown = did_you_mean(root, loc) or shown
        lines.append(f"{source}: {where}: {message}{shown}")
    return "\n".join(lines)


def yaml_error(path: Path, err: yaml.YAMLError) -> str:
    """`FILE:LINE:COL: not valid YAML: problem`: PyYAML's own text names `<unicode string>`."""
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    return f"{where}: not valid YAML: {f'{context}: ' if context else ''}{problem}"


def parse_training(document: Any, source: str = "manifest") -> FederatedTraining:
    if not isinstance(document, dict):
        raise ManifestError(f"{source}: expected a mapping with apiVersion, kind, metadata and spec")
    try:
        return FederatedTraining.model_validate(document)
    except ValidationError as err:
        raise ManifestError(format_validation_error(err, source)) from None


def load_training(path: str | Path) -> FederatedTraining:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ManifestError(f"{path}: cannot read manifest: {err.strerror}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ManifestError(yaml_error(path, err)) from None
    trainings = [d for d in documents if isinstance(d, dict) and d.get("kind") == "FederatedTraining"]
    if len(trainings) != 1:
        if len(documents) == 1:
            return parse_training(documents[0], str(path))
        raise ManifestError(f"{path}: expected exactly one FederatedTraining, found {len(trainings)}")
    return parse_training(trainings[0], str(path))
