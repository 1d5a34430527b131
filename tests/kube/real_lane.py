"""The real lane: the project installed on a real control plane (tests/kube/control_plane.py) the
way docs/install.md tells users, `helm install` of charts/fedfleet and of charts/fedfleet-site per
site namespace, and the operator run as the hub chart's ServiceAccount with a token from the
TokenRequest API, so that every call it makes is authorised by the charts' RBAC."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.kube.control_plane import ControlPlane, kubeconfig_text

REPO = Path(__file__).resolve().parents[2]
HUB_CHART, SITE_CHART = REPO / "charts" / "fedfleet", REPO / "charts" / "fedfleet-site"
HUB_RELEASE = HUB_NAMESPACE = "fedfleet"  # the ServiceAccount is the release's full name: fedfleet
TRAININGS_NAMESPACE = "default"
OPERATOR_KUBECONFIG = "operator.kubeconfig"
OPERATOR_ARGS = "operator.args.json"
GPU = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU, "value": "present", "effect": "NoSchedule"}
# The test kubelet's Nodes: CPU nodes for everything, one GPU node (tainted, as GPU pools are)
# with one GPU; the real scheduler decides which pod goes where.
NODES: list[dict[str, Any]] = [
    {"name": "node-cpu-0", "labels": {"fedfleet.test/pool": "cpu"}, "capacity": {}, "taints": []},
    {"name": "node-cpu-1", "labels": {"fedfleet.test/pool": "cpu"}, "capacity": {}, "taints": []},
    {
        "name": "node-gpu-0",
        "labels": {"fedfleet.test/pool": "gpu", "nvidia.com/gpu.present": "true"},
        "capacity": {GPU: "1"},
        "taints": [GPU_TAINT],
    },
]
CLEAN_TIMEOUT = 60.0


class RealLane:
    """One control plane per session with the hub chart installed; sites are installed per test."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.kubeconfig = plane.kubeconfig
        self.api = config.new_client_from_config(str(plane.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.sites: set[str] = set()

    # -- install -----------------------------------------------------------------------------
    def install_hub(self, *extra: str) -> None:
        self.wait_service_account(TRAININGS_NAMESPACE, "default")
        # the chart's default, whole-cluster mode: a namespaced install sees FederationSites and
        # client pods only in the namespaces it watches (docs/install.md), and the sites here
        # live in namespaces of their own
        self.plane.helm(
            "install", HUB_RELEASE, str(HUB_CHART), "-n", HUB_NAMESPACE, "--create-namespace", *extra
        )  # fmt: skip
        self.write_operator_identity()

    def upgrade_hub(self, *values: str) -> None:
        """`helm upgrade` of the hub release (e.g. `--set namespaces={a,b}`); the operator's
        token and scope arguments follow the upgraded Deployment. The chart's objects win over
        an earlier test's hand edit (the refusal test replaces the ClusterRole's rules)."""
        self.plane.helm(
            "upgrade", HUB_RELEASE, str(HUB_CHART), "-n", HUB_NAMESPACE, "--force-conflicts", *values
        )  # fmt: skip
        self.write_operator_identity()

    def hub_deployment(self) -> dict[str, Any]:
        apps = client.AppsV1Api(self.api)
        found = apps.read_namespaced_deployment(HUB_RELEASE, HUB_NAMESPACE)
        return dict(self.api.sanitize_for_serialization(found))

    def write_operator_identity(self) -> None:
        """The operator's kubeconfig (a token of the chart's ServiceAccount) and the scope
        arguments the chart's Deployment gives it, next to the admin kubeconfig."""
        container = self.hub_deployment()["spec"]["template"]["spec"]
        account = container["serviceAccountName"]
        args = [
            a for a in container["containers"][0]["args"] if a.startswith(("--namespace", "--all-namespaces"))
        ]
        token = self.core.create_namespaced_service_account_token(
            account, HUB_NAMESPACE, {"spec": {"expirationSeconds": 6 * 3600}}
        ).status.token
        ca = (self.plane.pki / "ca.crt").read_bytes()
        self.kubeconfig.with_name(OPERATOR_KUBECONFIG).write_text(
            kubeconfig_text(self.plane.url, ca, {"token": token})
        )
        self.kubeconfig.with_name(OPERATOR_ARGS).write_text(json.dumps(args))

    def install_site(self, name: str, capacity: int = 2, **spec: Any) -> None:
        """fedfleet-site release `name` in namespace `name`: the FederationSite and the Role that
        lets the hub's ServiceAccount run client pods there. `spec` takes gpu/nodeSelector/tolerations."""
        values = {
            "site": {
                "name": name,
                "capacity": capacity,
                **({"gpu": spec["gpu"]} if "gpu" in spec else {}),
                **({"nodeSelector": spec["nodeSelector"]} if "nodeSelector" in spec else {}),
                **({"tolerations": spec["tolerations"]} if "tolerations" in spec else {}),
                **({"allowedBaseDigests": spec["policy"]["allowedBaseDigests"]} if "policy" in spec else {}),
            },
            "data": {"create": False},  # no storage provisioner here; the digits task needs no data
            "operator": {"serviceAccount": {"name": HUB_RELEASE, "namespace": HUB_NAMESPACE}},
        }
        path = self.plane.root / f"site-{name}.values.yaml"
        path.write_text(yaml.safe_dump(values))
        self.plane.helm("install", name, str(SITE_CHART), "-n", name, "--create-namespace", "-f", str(path))
        self.sites.add(name)
        self.wait_service_account(name, "default")  # pods are refused until the namespace has one

    def wait_service_account(self, namespace: str, name: str) -> None:
        until = time.monotonic() + CLEAN_TIMEOUT
        while time.monotonic() < until:
            with contextlib.suppress(ApiException):
                self.core.read_namespaced_service_account(name, namespace)
                return
            time.sleep(0.2)
        raise TimeoutError(f"no ServiceAccount {namespace}/{name}: is the controller-manager running?")

    # -- between tests ------------------------------------------------------------------------
    def clean(self) -> None:
        """Back to a fresh install: the tests' trainings (finalizers dropped: the operator has
        stopped), their objects in every namespace, and the sites' releases."""
        group, version = "fedfleet.io", "v1alpha1"
        for plural in ("federatedtrainings", "federatedrounds", "federationsites"):
            for item in self.custom.list_cluster_custom_object(group, version, plural)["items"]:
                meta = item["metadata"]
                with contextlib.suppress(ApiException):
                    if meta.get("finalizers"):
                        self.custom.patch_namespaced_custom_object(
                            group, version, meta["namespace"], plural, meta["name"],
                            {"metadata": {"finalizers": None}},
                        )  # fmt: skip
                    if meta["namespace"] in self.sites:
                        continue  # the site's release removes it
                    self.custom.delete_namespaced_custom_object(
                        group, version, meta["namespace"], plural, meta["name"]
                    )
        for site in sorted(self.sites):
            self.plane.helm("uninstall", site, "-n", site, "--wait", check=False)
        self.sites.clear()
        selector = "fedfleet.io/training"
        for pod in self.core.list_pod_for_all_namespaces(label_selector=selector).items:
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                )
        for kind in ("config_map", "secret", "service", "persistent_volume_claim"):  # retained ones too
            lister = getattr(self.core, f"list_{kind}_for_all_namespaces")
            deleter = getattr(self.core, f"delete_namespaced_{kind}")
            for item in lister(label_selector=selector).items:
                with contextlib.suppress(ApiException):
                    deleter(item.metadata.name, item.metadata.namespace)
        for volume in self.core.list_persistent_volume().items:  # tests bind their own, by claim
            with contextlib.suppress(ApiException):
                self.core.delete_persistent_volume(volume.metadata.name)
        until = time.monotonic() + CLEAN_TIMEOUT
        while self.core.list_pod_for_all_namespaces(label_selector=selector).items or any(
            self.custom.list_cluster_custom_object(group, version, p)["items"]
            for p in ("federatedtrainings", "federatedrounds")
        ):
            if time.monotonic() > until:
                raise TimeoutError("the real lane's objects were not removed between tests")
            time.sleep(0.2)

    def close(self) -> None:
        self.plane.stop()


def operator_scope_args(kubeconfig: Path) -> list[str]:
    """The chart Deployment's scope flags (--namespace=...) when the lane wrote them, else none."""
    path = kubeconfig.with_name(OPERATOR_ARGS)
    return list(json.loads(path.read_text())) if path.exists() else []
