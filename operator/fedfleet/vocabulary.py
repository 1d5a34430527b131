"""The project's Kubernetes vocabulary in one place: API group and version, kinds and their
plurals, label and annotation keys, the finalizer, training and round phases, round kinds.

Everything that names a fedfleet object or reads a phase imports it from here, so a phase or
a label key is spelled once.
"""

from __future__ import annotations

from typing import Final, Literal

GROUP: Final = "fedfleet.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

TRAINING: Final = "FederatedTraining"
ROUND: Final = "FederatedRound"
SITE: Final = "FederationSite"
PLATFORM: Final = "ClusterPodTemplate"  # cluster-scoped: the platform's pod defaults
PLURALS: Final = {
    TRAINING: "federatedtrainings",
    ROUND: "federatedrounds",
    SITE: "federationsites",
    PLATFORM: "clusterpodtemplates",
}

LABEL_TRAINING: Final = f"{GROUP}/training"
LABEL_SITE: Final = f"{GROUP}/site"
LABEL_CLIENT: Final = f"{GROUP}/client"
LABEL_ROUND: Final = f"{GROUP}/round"
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"

ANNOTATION_ATTEMPT: Final = f"{GROUP}/attempt"  # a client pod's start number (1 = first start)
ANNOTATION_GIVEN_UP: Final = f"{GROUP}/given-up"  # a failed client pod not restarted again
FINALIZER: Final = f"{GROUP}/cleanup"

COMPONENT_AGGREGATOR: Final = "aggregator"
COMPONENT_CLIENT: Final = "client"

TrainingPhase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]
PENDING: Final = "Pending"
RUNNING: Final = "Running"
SUSPENDED: Final = "Suspended"  # spec.suspend: no client pods, the aggregator and its state kept
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
FINAL_PHASES: Final = frozenset({SUCCEEDED, FAILED})

RoundPhase = Literal["Pending", "Training", "Aggregating", "Succeeded", "Failed"]
ROUND_PHASES: Final[tuple[RoundPhase, ...]] = ("Pending", "Training", "Aggregating", "Succeeded", "Failed")
ACTIVE_ROUND_PHASES: Final = frozenset({"Pending", "Training", "Aggregating"})

RoundKind = Literal["train", "evaluate"]
TRAIN: Final = "train"
EVALUATE: Final = "evaluate"
