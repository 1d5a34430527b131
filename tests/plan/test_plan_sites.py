"""`fedfleet plan --kubeconfig` against the project's test API server: the operator's own site
resolution, then per site the data claim, GPU capacity and policy a training depends on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fedfleet.cli import main

from tests.controller.cluster import Cluster, site, training_manifest

DIGEST = "sha256:" + "ab" * 32


def write(path: Path, sites: tuple[str, ...] = ("site-a", "site-b", "site-c"), **spec: object) -> Path:
    manifest = training_manifest("digits", 50051, list(sites), **spec)
    path.write_text(yaml.safe_dump(manifest))
    return path


def test_plan_checks_the_sites_a_cluster_has(
    kubeconfig: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = Cluster(kubeconfig)
    cluster.core.create_namespaced_persistent_volume_claim(
        "default",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "site-a-data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    cluster.apply(site("site-a", dataVolumeClaim="site-a-data"))
    cluster.apply(site("site-b", dataVolumeClaim="site-b-data"))  # no such claim
    cluster.apply(site("site-c", gpu={"count": 1}, policy={"allowedBaseDigests": [DIGEST]}))

    code = main(["plan", str(write(tmp_path / "m.yaml")), "--kubeconfig", str(kubeconfig)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "FederationSite site-b: dataVolumeClaim site-b-data does not exist in namespace default" in err
    assert "site site-a (namespace default): claim site-a-data found" in err and ": ok" in err
    assert "FederationSite site-c: 1 nvidia.com/gpu needed, the nodes have 0" in err
    assert "FederationSite site-c: policy.allowedBaseDigests does not allow spec.model.digest (none)" in err

    code = main(
        [
            "plan",
            str(
                write(
                    tmp_path / "n.yaml",
                    sites=("site-a", "site-x"),
                    minClients=1,
                    secureAggregation={"enabled": False},
                )
            ),
            "--kubeconfig",
            str(kubeconfig),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "spec.sites.names: no FederationSite named site-x" in err
