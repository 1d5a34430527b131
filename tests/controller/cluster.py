"""A test's handle on a Kubernetes API (the test server, or a real cluster) and on the operator.

Only a kubeconfig is needed, so the same tests run against a real cluster (kind, k3d) when
FEDFLEET_TEST_KUBECONFIG points at one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.dataplane.harness import free_port
from tests.kube.fixtures import operator_kubeconfig, real_lane_of
from tests.kube.real_lane import operator_scope_args

GROUP, VERSION = "fedfleet.io", "v1alpha1"
PLURALS = {
    "FederatedTraining": "federatedtrainings",
    "FederatedRound": "federatedrounds",
    "FederationSite": "federationsites",
}
Object = dict[str, Any]


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.api = config.new_client_from_config(str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def apply(self, obj: Object) -> Object:
        kind, meta = obj["kind"], obj["metadata"]
        if kind in PLURALS:
            return dict(
                self.custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    meta.get("namespace", "default"),
                    PLURALS[kind],
                    obj,
                    field_validation="Strict",  # as kubectl does: an unknown field is refused
                )
            )
        if kind == "Namespace":
            try:
                return self.api.sanitize_for_serialization(self.core.create_namespace(obj))
            except ApiException as err:
                if err.status != 409:
                    raise
                return obj
        raise ValueError(kind)

    def get(self, kind: str, namespace: str, name: str) -> Object | None:
        try:
            return dict(
                self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def items(self, kind: str, namespace: str | None = None, selector: str = "") -> list[Object]:
        if kind in PLURALS:
            if namespace:
                found = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURALS[kind], label_selector=selector
                )
            else:
                found = self.custom.list_cluster_custom_object(
                    GROUP, VERSION, PLURALS[kind], label_selector=selector
                )
            return list(found["items"])
        lister = {
            "Pod": self.core.list_pod_for_all_namespaces,
            "Service": self.core.list_service_for_all_namespaces,
            "ConfigMap": self.core.list_config_map_for_all_namespaces,
            "Secret": self.core.list_secret_for_all_namespaces,
            "Event": self.core.list_event_for_all_namespaces,
            "PersistentVolumeClaim": self.core.list_persistent_volume_claim_for_all_namespaces,
            "NetworkPolicy": client.NetworkingV1Api(self.api).list_network_policy_for_all_namespaces,
        }[kind]
        return [self.api.sanitize_for_serialization(i) for i in lister(label_selector=selector).items]

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)

    def events(self, name: str) -> list[tuple[str, str]]:
        """(reason, message) of Events about objects named `name` or starting with it, oldest
        first (a real API server lists them by name, not by when they happened)."""
        found = [
            e for e in self.items("Event") if (e.get("involvedObject") or {}).get("name", "").startswith(name)
        ]
        found.sort(
            key=lambda e: str(
                e.get("eventTime") or e.get("firstTimestamp") or e["metadata"].get("creationTimestamp") or ""
            )
        )
        return [(e["reason"], e.get("message", "")) for e in found]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    until = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < until:
        try:
            last = condition()
            if last:
                return last
        except ApiException as err:
            last = err
        time.sleep(interval)
    raise TimeoutError(f"{what} (last: {last!r})")


def start_operator(
    kubeconfig: Path,
    log: Path,
    aggregator_address: str = "127.0.0.1:{port}",
    interval: float | None = 0.3,
    source: Path | None = None,
    **settings: str,
) -> subprocess.Popen[bytes]:
    """`fedfleet operator` as a real process, with the identity and the scope (--namespace) the
    lane gives it; pods reach aggregators on loopback in tests. `interval`: None keeps the
    operator's own default; `source`: another checkout's operator package (bench baselines);
    `settings`: more FEDFLEET_* env, over the ones set here."""
    env = os.environ | {
        "KUBECONFIG": str(operator_kubeconfig(kubeconfig)),
        "FEDFLEET_AGGREGATOR_ADDRESS": aggregator_address,
        "FEDFLEET_LOG_LEVEL": os.environ.get("FEDFLEET_TEST_OPERATOR_LOG_LEVEL", "INFO"),
        "FEDFLEET_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("FEDFLEET_RECONCILE_INTERVAL", None)
    if interval is not None:
        env["FEDFLEET_RECONCILE_INTERVAL"] = str(interval)
    if source is not None:
        env["PYTHONPATH"] = str(source / "operator")
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedfleet",
                "operator",
                "--standalone",
                "--liveness",
                "",
                "--metrics-port",
                "0",
                *operator_scope_args(kubeconfig),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env | settings,
            cwd=source,
        )


def training_manifest(name: str, port: int, sites: list[str], **spec: Any) -> Object:
    body: Object = {
        "task": {"name": "digits-mlp", "config": {"hidden": 8, "localEpochs": 1}},
        "rounds": 3,
        "sites": {"names": sites},
        "minClients": 2,
        "roundTimeoutSeconds": 60,
        "retry": {"maxAttempts": 3, "backoffSeconds": 0.2, "maxRoundAttempts": 2},
        # every test pod shares the loopback: each aggregator needs its own metrics port too
        "aggregator": {"port": port, "metricsPort": free_port()},
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FederatedTraining",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body | spec,
    }


def install_sites(kubeconfig: Path, names: list[str], **spec: Any) -> None:
    """Sites as the lane has them: FederationSites applied in `default` on the test server; on
    the real control plane, one `helm install` of charts/fedfleet-site per site namespace."""
    lane = real_lane_of(kubeconfig)
    for name in names:
        if lane is not None:
            lane.install_site(name, **spec)
        else:
            Cluster(kubeconfig).apply(site(name, **spec))


def site(name: str, namespace: str = "default", **spec: Any) -> Object:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FederationSite",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"capacity": 2} | spec,
    }
