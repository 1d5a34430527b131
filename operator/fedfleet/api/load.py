"""Reading manifests: YAML or JSON in, a validated FederatedTraining out, or one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fedfleet.api.suggest import did_you_mean
from fedfleet.api.training import FederatedTraining
from fedfleet.text import shorten

MAX_MANIFEST_BYTES = 1 << 20
MAX_EXPANDED_NODES = 100_000  # nodes after aliases are expanded: more is an alias bomb


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
            ""
            if issue["type"] in ("missing", "model_type") or isinstance(got, dict)
            else f" (got {shorten(repr(got))})"
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
    problem = shorten(getattr(err, "problem", None) or str(err))
    context = getattr(err, "context", None)
    return f"{where}: not valid YAML: {f'{context}: ' if context else ''}{problem}"


class StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses what would silently change a manifest's meaning or size: a key
    given twice in one mapping (the last would win unseen), and aliases that expand past
    MAX_EXPANDED_NODES nodes (an alias bomb; the error names the size, never the content)."""

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases expand past {MAX_EXPANDED_NODES} nodes (an alias bomb?)",
                node.start_mark,
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {shorten(repr(key_node.value))}", key_node.start_mark
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in the document with every alias expanded (memoised: shared nodes count per use)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_EXPANDED_NODES + 1  # a recursive alias is refused as a bomb
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        size = 1
    sizes[id(node)] = min(size, MAX_EXPANDED_NODES + 1)
    return sizes[id(node)]


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
        with path.open("rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as err:
        raise ManifestError(f"{path}: cannot read manifest: {err.strerror}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; a manifest is far smaller")
    try:
        documents = [d for d in yaml.load_all(raw.decode(), Loader=StrictLoader) if d is not None]
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as err:
        raise ManifestError(yaml_error(path, err)) from None
    trainings = [d for d in documents if isinstance(d, dict) and d.get("kind") == "FederatedTraining"]
    if len(trainings) != 1:
        if len(documents) == 1:
            return parse_training(documents[0], str(path))
        raise ManifestError(f"{path}: expected exactly one FederatedTraining, found {len(trainings)}")
    return parse_training(trainings[0], str(path))
