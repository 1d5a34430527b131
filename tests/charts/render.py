"""The charts rendered offline with Helm's own SDK (helm-python-sdk): no cluster, no helm binary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
HUB = REPO / "charts" / "fedfleet"
SITE = REPO / "charts" / "fedfleet-site"
CHARTS = (HUB, SITE)
# release name and namespace each chart is rendered with
RELEASE = {HUB: ("fedfleet", "fedfleet"), SITE: ("site-a", "site-a")}
Object = dict[str, Any]


def ci_values(chart: Path) -> list[Path]:
    return sorted((chart / "ci").glob("*.yaml"))


def variants() -> list[tuple[Path, Path | None]]:
    """Every chart with its defaults and with each of its ci/ value files."""
    return [(chart, values) for chart in CHARTS for values in (None, *ci_values(chart))]


def variant_id(variant: tuple[Path, Path | None]) -> str:
    chart, values = variant
    return f"{chart.name}:{values.stem if values else 'defaults'}"


def load_values(path: Path | None) -> Object | None:
    return yaml.safe_load(path.read_text()) if path else None


def render_files(chart: Path, values: Object | None = None, namespace: str | None = None) -> dict[str, str]:
    name, default_namespace = RELEASE.get(chart, (chart.name, chart.name))
    with helm.Chart.load(chart) as loaded:
        return loaded.render(values, name=name, namespace=namespace or default_namespace, is_install=True)


def objects(files: dict[str, str]) -> list[Object]:
    return [
        doc
        for path, text in sorted(files.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def render(chart: Path, values: Object | None = None, namespace: str | None = None) -> list[Object]:
    return objects(render_files(chart, values, namespace))


def of_kind(objs: list[Object], kind: str) -> list[Object]:
    return [o for o in objs if o["kind"] == kind]
