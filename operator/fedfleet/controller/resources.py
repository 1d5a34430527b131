"""The Kubernetes objects a training needs, built as plain dicts (pure: no API calls).

Names are deterministic, so a reconcile after any restart finds, rather than duplicates, what
an earlier one created. Every pod runs under the restricted Pod Security Standard.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from fedfleet.api.pods import (
    DATA_PATH,
    MANIFEST_DIR,
    SCRATCH_PATH,
    SECRETS_DIR,
    STATE_PATH,
    PodSettings,
    PodTemplate,
)
from fedfleet.api.site import FederationSiteSpec
from fedfleet.api.training import FederatedTraining, FederatedTrainingSpec
from fedfleet.identity.names import server_name

Object = dict[str, Any]
GROUP = "fedfleet.io"
MANIFEST_PATH = f"{MANIFEST_DIR}/manifest.json"
TLS_PATH = f"{SECRETS_DIR}/tls"  # a kubernetes.io/tls Secret: tls.crt, tls.key, ca.crt
LINEAGE_PATH = f"{SECRETS_DIR}/lineage"
LINEAGE_KEY_FILE = "ed25519.pem"


@dataclass(frozen=True)
class TrainingRef:
    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> Object:
        return {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "FederatedTraining",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class SiteRef:
    name: str
    namespace: str  # where the site's client pods run
    spec: FederationSiteSpec
    gone: str = ""  # why a site the training ran on is no longer one (deleted at the hub): no pods, revoked


def pods_namespace(site: Object) -> str:
    """Where a FederationSite's client pods run: its spec.namespace, else its own namespace."""
    return str((site.get("spec") or {}).get("namespace") or site["metadata"]["namespace"])


def labels(training: str, component: str, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "fedfleet",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": training,
        "app.kubernetes.io/managed-by": "fedfleet-operator",
        f"{GROUP}/training": training,
        **{f"{GROUP}/{k}": v for k, v in extra.items()},
    }


def aggregator_name(training: str) -> str:
    return f"{training}-aggregator"


def manifest_name(training: str) -> str:
    return f"{training}-manifest"


def client_id(site: str, index: int) -> str:
    return f"{site}-{index}"


def client_ids(site: str, clients_per_site: int) -> list[str]:
    return [client_id(site, index) for index in range(clients_per_site)]


def client_pod_name(training: str, client: str) -> str:
    return f"{training}-{client}"


def ca_secret_name(training: str) -> str:
    return f"{training}-ca"


def tls_secret_name(training: str, component: str) -> str:
    """`component` is `aggregator` or a client id."""
    return f"{training}-{component}-tls"


def lineage_secret_name(training: str) -> str:
    return f"{training}-lineage-key"


def round_name(training: str, number: int, kind: str) -> str:
    return f"{training}-eval" if kind == "evaluate" else f"{training}-r{number:04d}"


RESTRICTED_CONTAINER: Object = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD: Object = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _container(name: str, settings: PodSettings, args: list[str], mounts: list[Object]) -> Object:
    return {
        "name": name,
        "image": settings.container_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["fedfleet"],
        "args": args,
        "env": [
            {"name": "FEDFLEET_LOG_FORMAT", "value": "json"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": "/tmp"},
        ],
        "resources": settings.resources.model_dump(exclude_defaults=True),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": SCRATCH_PATH}],
    }


def with_template(pod: Object, template: PodTemplate) -> Object:
    """`template` merged over a generated pod. It adds labels, annotations, pull secrets, a
    priority class, a service account, affinity, topology spread, env, volumes and mounts, and
    may change the pod's uid/gid. What the operator generated wins on any clash: its labels and
    annotations, its env names, its volumes and mount paths (refused in the spec), the
    container's command, args, ports and probes, the restricted security settings, and
    `automountServiceAccountToken: false` (no fedfleet pod but the operator calls the API)."""
    meta, spec, extra = pod["metadata"], pod["spec"], template.spec
    meta["labels"] = {**template.metadata.labels, **meta["labels"]}
    meta["annotations"] = {**template.metadata.annotations, **meta.get("annotations", {})}
    optional: Object = {
        "imagePullSecrets": [ref.model_dump() for ref in extra.image_pull_secrets],
        "priorityClassName": extra.priority_class_name,
        "serviceAccountName": extra.service_account_name,
        "affinity": copy.deepcopy(extra.affinity),
        "topologySpreadConstraints": copy.deepcopy(extra.topology_spread_constraints),
    }
    spec.update({key: value for key, value in optional.items() if value})
    spec["automountServiceAccountToken"] = False
    spec["securityContext"] = RESTRICTED_POD | extra.security_context.model_dump(
        by_alias=True, exclude_defaults=True
    )
    spec["volumes"] = [*spec["volumes"], *copy.deepcopy(extra.volumes)]
    container = spec["containers"][0]
    owned = {var["name"] for var in container["env"]}
    container["env"] = [*container["env"], *(copy.deepcopy(v) for v in extra.env if v["name"] not in owned)]
    container["volumeMounts"] = [*container["volumeMounts"], *copy.deepcopy(extra.volume_mounts)]
    return pod


def tls_args() -> list[str]:
    return [
        "--tls-cert",
        f"{TLS_PATH}/tls.crt",
        "--tls-key",
        f"{TLS_PATH}/tls.key",
        "--tls-ca",
        f"{TLS_PATH}/ca.crt",
    ]


def secret_volume(name: str, secret: str) -> Object:
    """Read-only to the pod's group (fsGroup) only: private keys are not world-readable."""
    return {"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}


RETAIN_LABEL = "fedfleet.io/retain"  # kept when the training is deleted (lineage key, state volume)


def secret(
    ref: TrainingRef,
    name: str,
    namespace: str,
    component: str,
    type_: str,
    data: dict[str, str],
    retained: bool = False,
) -> Object:
    """A Secret of the training (base64 `data`), found by the cleanup through its labels; a
    `retained` one has no owner and outlives the training (the key that verifies its models)."""
    extra = {RETAIN_LABEL: "true"} if retained else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": type_,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(ref.name, component) | extra,
            **({} if retained else owned_in(ref, namespace)),
        },
        "data": data,
    }


def owned_in(ref: TrainingRef, namespace: str) -> Object:
    """Owner references only work within a namespace; elsewhere the finalizer cleans up."""
    return {"ownerReferences": [ref.owner_reference()]} if namespace == ref.namespace else {}


def training_manifest(ref: TrainingRef, training: FederatedTraining) -> Object:
    """The training as its pods read it (the manifest ConfigMap's `manifest.json`)."""
    return training.model_dump(by_alias=True, mode="json", exclude={"metadata"}) | {
        "metadata": {"name": ref.name, "namespace": ref.namespace}
    }


def external_host(spec: FederatedTrainingSpec) -> str:
    """The host of `spec.aggregator.externalAddress` (remote sites dial it), or empty."""
    return spec.aggregator.external_address.rsplit(":", 1)[0]


def manifest_config_map(ref: TrainingRef, manifest: Object, namespace: str) -> Object:
    """The manifest the pods read, one copy per namespace that runs pods of the training."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": manifest_name(ref.name),
            "namespace": namespace,
            "labels": labels(ref.name, "manifest"),
            **owned_in(ref, namespace),
        },
        "data": {"manifest.json": json.dumps(manifest, sort_keys=True)},
    }


def aggregator_selector(ref: TrainingRef) -> dict[str, str]:
    """The labels that pick a training's aggregator pod (Service, NetworkPolicy)."""
    return {f"{GROUP}/training": ref.name, "app.kubernetes.io/component": "aggregator"}


def aggregator_metadata(ref: TrainingRef, name: str) -> Object:
    """Metadata of the aggregator's objects: in the training's namespace, owned by it."""
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": labels(ref.name, "aggregator"),
        "ownerReferences": [ref.owner_reference()],
    }


def aggregator_service(ref: TrainingRef, spec: FederatedTrainingSpec) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": aggregator_metadata(ref, aggregator_name(ref.name)),
        "spec": {
            "selector": aggregator_selector(ref),
            "ports": [
                {
                    "name": "grpc",
                    "port": spec.aggregator.port,
                    "targetPort": spec.aggregator.port,
                    "appProtocol": "grpc",
                },
                {  # what the hub chart's ServiceMonitor for aggregators scrapes
                    "name": "metrics",
                    "port": spec.aggregator.metrics_port,
                    "targetPort": spec.aggregator.metrics_port,
                    "appProtocol": "http",
                },
            ],
        },
    }


def aggregator_pod(ref: TrainingRef, spec: FederatedTrainingSpec) -> Object:
    settings = spec.aggregator
    state_volume: Object = (
        {"persistentVolumeClaim": {"claimName": state_claim_name(ref.name)}}
        if settings.state_volume_size
        else {"emptyDir": {}}
    )
    model_mounts: list[Object] = []
    model_volumes: list[Object] = []
    if settings.model_volume_claim:  # e.g. a LoRA base's config.json at spec.model.source
        model_mounts = [{"name": "model", "mountPath": settings.model_mount_path, "readOnly": True}]
        model_volumes = [
            {
                "name": "model",
                "persistentVolumeClaim": {"claimName": settings.model_volume_claim, "readOnly": True},
            }
        ]
    pod: Object = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": aggregator_metadata(ref, aggregator_name(ref.name))
        | {"annotations": scrape_annotations(settings.metrics_port)},
        "spec": {
            "restartPolicy": "OnFailure",
            "securityContext": RESTRICTED_POD,
            "nodeSelector": settings.node_selector,
            "tolerations": settings.tolerations,
            "containers": [
                _container(
                    "aggregator",
                    settings,
                    [
                        "aggregator",
                        "--manifest",
                        MANIFEST_PATH,
                        "--port",
                        str(settings.port),
                        "--state-dir",
                        STATE_PATH,
                        "--staging-slots",
                        str(settings.staging_slots),
                        "--metrics-port",
                        str(settings.metrics_port),
                        *tls_args(),
                        "--lineage-key",
                        f"{LINEAGE_PATH}/{LINEAGE_KEY_FILE}",
                    ],
                    [
                        {"name": "manifest", "mountPath": "/etc/fedfleet", "readOnly": True},
                        {"name": "state", "mountPath": STATE_PATH},
                        {"name": "tls", "mountPath": TLS_PATH, "readOnly": True},
                        {"name": "lineage", "mountPath": LINEAGE_PATH, "readOnly": True},
                        *model_mounts,
                    ],
                )
                | {
                    "ports": [
                        {"name": "grpc", "containerPort": settings.port},
                        {"name": "metrics", "containerPort": settings.metrics_port},
                    ],
                    # the kubelet's grpc probe cannot do mTLS; the port listens once the model is loaded
                    "readinessProbe": {"tcpSocket": {"port": settings.port}, "periodSeconds": 5},
                    # the metrics server answers from the process's start, model loading included
                    "livenessProbe": {
                        "httpGet": {"path": "/metrics", "port": "metrics"},
                        "periodSeconds": 20,
                        "timeoutSeconds": 5,
                        "failureThreshold": 3,
                    },
                }
            ],
            "volumes": [
                {"name": "manifest", "configMap": {"name": manifest_name(ref.name)}},
                {"name": "state", **state_volume},
                {"name": "tmp", "emptyDir": {}},
                secret_volume("tls", tls_secret_name(ref.name, "aggregator")),
                secret_volume("lineage", lineage_secret_name(ref.name)),
                *model_volumes,
            ],
        },
    }
    return with_template(pod, settings.pod_template)


def scrape_annotations(port: int) -> dict[str, str]:
    """How a Prometheus without the Prometheus Operator finds a pod to scrape (as the hub chart
    marks the operator's pod)."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def state_claim_name(training: str) -> str:
    return f"{training}-state"


def state_claim(ref: TrainingRef, spec: FederatedTrainingSpec) -> Object | None:
    """Not owned by the training: every checkpoint and the lineage outlive it unless
    `spec.retention.stateVolume: Delete` (the deletion handler reads it then)."""
    if not spec.aggregator.state_volume_size:
        return None
    meta = aggregator_metadata(ref, state_claim_name(ref.name))
    del meta["ownerReferences"]
    meta["labels"][RETAIN_LABEL] = "true"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.aggregator.state_volume_size}},
        },
    }


def client_pod(
    ref: TrainingRef,
    spec: FederatedTrainingSpec,
    site: SiteRef,
    index: int,
    partition: int,
    aggregator_address: str,
    attempt: int,
) -> Object:
    """One site client. Pods in the training's namespace are owned by it; pods elsewhere are
    removed by the training's finalizer (owner references cannot cross namespaces)."""
    cid = client_id(site.name, index)
    settings = spec.client
    resources = settings.resources.model_dump(exclude_defaults=True)
    if site.spec.gpu.count:
        for kind in ("requests", "limits"):
            resources.setdefault(kind, {})[site.spec.gpu.resource_name] = site.spec.gpu.count
    mounts, volumes = (
        [{"name": "tls", "mountPath": TLS_PATH, "readOnly": True}],
        [
            {"name": "manifest", "configMap": {"name": manifest_name(ref.name)}},
            {"name": "tmp", "emptyDir": {}},
            secret_volume("tls", tls_secret_name(ref.name, cid)),
        ],
    )
    args = [
        "client",
        "--manifest",
        MANIFEST_PATH,
        "--aggregator",
        aggregator_address,
        "--site",
        site.name,
        "--client-id",
        cid,
        "--partition",
        str(partition),
        "--num-partitions",
        str(spec.expected_clients()),
        *tls_args(),
        "--tls-server-name",
        server_name(ref.name, ref.namespace),
    ]
    for digest in site.spec.policy.allowed_base_digests:  # the site's governance: its client checks
        args += ["--allowed-base-digest", digest]
    if site.spec.data_volume_claim:
        mounts.append({"name": "data", "mountPath": DATA_PATH, "readOnly": True})
        volumes.append(
            {
                "name": "data",
                "persistentVolumeClaim": {"claimName": site.spec.data_volume_claim, "readOnly": True},
            }
        )
        args += ["--data-dir", DATA_PATH]
    metadata: Object = {
        "name": client_pod_name(ref.name, cid),
        "namespace": site.namespace,
        "labels": {**site.spec.pod_labels, **labels(ref.name, "client", site=site.name, client=cid)},
        "annotations": {f"{GROUP}/attempt": str(attempt)},
        **owned_in(ref, site.namespace),
    }
    container = _container(
        "client",
        settings,
        args,
        [{"name": "manifest", "mountPath": "/etc/fedfleet", "readOnly": True}, *mounts],
    )
    container["resources"] = resources
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"  # a refusal's reason reaches status
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "restartPolicy": "Never",  # the operator restarts clients, with backoff and a limit
            "securityContext": RESTRICTED_POD,
            "nodeSelector": {**settings.node_selector, **site.spec.node_selector},
            "tolerations": [*settings.tolerations, *site.spec.tolerations],
            "containers": [container],
            "volumes": volumes,
        },
    }
    return with_template(pod, settings.pod_template)  # the site's labels, placement and data still win


def aggregator_network_policy(ref: TrainingRef, spec: FederatedTrainingSpec) -> Object | None:
    """Only the training's client pods and the operator reach the aggregator's gRPC port; its
    metrics port is open to the cluster (Prometheus lives anywhere). Clients are matched in any
    namespace, so a site that joins later (a label selector) is never locked out. Needs a CNI
    that enforces NetworkPolicy; mTLS holds either way."""
    settings = spec.aggregator
    if not settings.network_policy:
        return None
    clients = {f"{GROUP}/training": ref.name, "app.kubernetes.io/component": "client"}
    operator = {"app.kubernetes.io/name": "fedfleet", "app.kubernetes.io/component": "operator"}
    sources: list[Object] = [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": clients}},
        {"namespaceSelector": {}, "podSelector": {"matchLabels": operator}},
    ]
    grpc: Object = {"from": sources} if not settings.external_address else {}  # remote sites: from outside
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": aggregator_metadata(ref, aggregator_name(ref.name)),
        "spec": {
            "podSelector": {"matchLabels": aggregator_selector(ref)},
            "policyTypes": ["Ingress"],
            "ingress": [
                grpc | {"ports": [{"protocol": "TCP", "port": settings.port}]},
                {"ports": [{"protocol": "TCP", "port": settings.metrics_port}]},
            ],
        },
    }


RELEASE_ATTEMPT = f"{GROUP}/attempt"
REGISTRY_PATH = f"{SECRETS_DIR}/registry"  # HOME of the release pod: .docker/config.json


def release_pod_name(training: str) -> str:
    return f"{training}-release"


def release_pod(ref: TrainingRef, spec: FederatedTrainingSpec, attempt: int) -> Object:
    """Pushes the final model from the aggregator's state volume (read-only, once the aggregator
    pod is gone) with the lineage key: `fedfleet model release`. Only this pod holds the
    registry's credentials; its termination message carries the pushed digest."""
    release = spec.release.oci
    assert release is not None and spec.aggregator.state_volume_size  # checked at admission
    settings = spec.aggregator
    args = [
        "model",
        "release",
        STATE_PATH,
        "--to",
        release.reference,
        "--key",
        f"{LINEAGE_PATH}/{LINEAGE_KEY_FILE}",
        "--manifest",
        MANIFEST_PATH,
        *(["--insecure"] if release.insecure else []),
    ]
    mounts = [
        {"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": True},
        {"name": "state", "mountPath": STATE_PATH, "readOnly": True},
        {"name": "lineage", "mountPath": LINEAGE_PATH, "readOnly": True},
    ]
    volumes: list[Object] = [
        {"name": "manifest", "configMap": {"name": manifest_name(ref.name)}},
        {
            "name": "state",
            "persistentVolumeClaim": {"claimName": state_claim_name(ref.name), "readOnly": True},
        },
        {"name": "tmp", "emptyDir": {}},
        secret_volume("lineage", lineage_secret_name(ref.name)),
    ]
    if release.credentials_secret:  # the registry client reads $HOME/.docker/config.json
        mounts.append({"name": "registry", "mountPath": REGISTRY_PATH, "readOnly": True})
    container = _container("release", settings, args, mounts)
    if release.credentials_secret:
        volumes.append(
            {
                "name": "registry",
                "secret": {
                    "secretName": release.credentials_secret,
                    "defaultMode": 0o440,
                    "items": [{"key": ".dockerconfigjson", "path": ".docker/config.json"}],
                },
            }
        )
        container["env"] = [
            {**var, "value": REGISTRY_PATH} if var["name"] == "HOME" else var for var in container["env"]
        ]
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    meta = aggregator_metadata(ref, release_pod_name(ref.name))
    meta["labels"] = labels(ref.name, "release")
    meta["annotations"] = {RELEASE_ATTEMPT: str(attempt)}
    pod: Object = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "restartPolicy": "Never",  # the operator retries, a bounded number of times
            "securityContext": RESTRICTED_POD,
            "nodeSelector": settings.node_selector,
            "tolerations": settings.tolerations,
            "containers": [container],
            "volumes": volumes,
        },
    }
    return with_template(pod, settings.pod_template)  # pull secrets, placement: as the aggregator's
