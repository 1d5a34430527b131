"""What follows a training's end: the aggregator pod is removed (its state volume stays), then,
for a Succeeded training with `spec.release`, a release pod pushes the final model from that
volume and the pushed digest goes to `status.release`.

A pod, not a Job: the operator already supervises pods with bounded retries and reads their
termination messages, and only this pod holds the registry's credentials; it needs nothing a
Job controller adds, so it runs on an API server without one. The volume is read once the
aggregator pod is gone, so a ReadWriteOnce claim may be mounted anywhere.
"""

from __future__ import annotations

import json
from typing import Any

from fedfleet import vocabulary as vocab
from fedfleet.api.status import ReleaseStatus
from fedfleet.api.training import FederatedTraining
from fedfleet.controller import resources as res
from fedfleet.controller.client_pods import termination_message
from fedfleet.controller.kube import Kube
from fedfleet.controller.status_writer import EmitEvent, Pass, as_async
from fedfleet.logs import get_logger
from fedfleet.release.oci import repository

Object = dict[str, Any]
log = get_logger(component="operator")
RELEASE_ATTEMPTS = 3  # a registry that refuses three times is not going to take it on a fourth
MESSAGE_LIMIT = 500


def _named(pods: list[Object], namespace: str, name: str) -> Object | None:
    return next(
        (p for p in pods if p["metadata"]["name"] == name and p["metadata"]["namespace"] == namespace),
        None,
    )


class Ending:
    def __init__(self, kube: Kube, emit: EmitEvent) -> None:
        self.kube = kube
        self.emit = as_async(emit)
        self._asked: set[tuple[str, str]] = set()  # (training uid, pod name) deleted or created, not yet seen

    def forget(self, uid: str) -> None:
        self._asked = {a for a in self._asked if a[0] != uid}

    async def settle(
        self,
        ref: res.TrainingRef,
        phase: str,
        training: FederatedTraining | None,
        pods: list[Object],
        step: Pass,
    ) -> bool:
        """One pass over a training that ended in `phase`; True once nothing is left to do."""
        aggregator = _named(pods, ref.namespace, res.aggregator_name(ref.name))
        if aggregator is not None:
            key = (ref.uid, res.aggregator_name(ref.name))
            if key not in self._asked and not aggregator["metadata"].get("deletionTimestamp"):
                await self.kube.delete("Pod", ref.namespace, res.aggregator_name(ref.name))
                self._asked.add(key)
                log.info("aggregator.removed", training=ref.name, phase=phase)
            return False  # the state volume is released once the pod is gone
        self._asked.discard((ref.uid, res.aggregator_name(ref.name)))
        release = training.spec.release.oci if training is not None else None
        if phase != vocab.SUCCEEDED or release is None:
            return True
        recorded = (step.current.release or ReleaseStatus()).dump()
        if recorded.get("phase") in vocab.FINAL_PHASES:
            return True
        return await self._release(ref, training, pods, step, recorded, release.reference)

    async def _release(
        self,
        ref: res.TrainingRef,
        training: FederatedTraining | None,
        pods: list[Object],
        step: Pass,
        recorded: Object,
        reference: str,
    ) -> bool:
        assert training is not None
        name = res.release_pod_name(ref.name)
        pod = _named(pods, ref.namespace, name)
        attempt = int(recorded.get("attempts", 0))
        key = (ref.uid, name)
        if pod is None:
            if key in self._asked:
                return False  # created or deleted moments ago: the index has not caught up
            attempt += 1
            await self.kube.ensure(res.release_pod(ref, training.spec, attempt))
            self._asked.add(key)
            step.status.release = ReleaseStatus(phase="Running", reference=reference, attempts=attempt)
            return False
        self._asked.discard(key)
        pod_phase = (pod.get("status") or {}).get("phase")
        if pod_phase == "Succeeded":
            return await self._released(ref, step, pod, reference, attempt)
        if pod_phase != "Failed" or pod["metadata"].get("deletionTimestamp"):
            return False
        reason = termination_message(pod)[:MESSAGE_LIMIT] or "the release pod failed (its log has the reason)"
        await self.emit(step.body, "Warning", "ReleaseFailed", f"attempt {attempt}: {reason}")
        if attempt < RELEASE_ATTEMPTS:
            await self.kube.delete("Pod", ref.namespace, name)  # the next pass starts the next attempt
            self._asked.add(key)
            step.status.release = ReleaseStatus.model_validate(recorded | {"message": reason})
            return False
        step.status.release = ReleaseStatus.model_validate(recorded | {"phase": "Failed", "message": reason})
        return True

    async def _released(
        self, ref: res.TrainingRef, step: Pass, pod: Object, reference: str, attempt: int
    ) -> bool:
        try:
            said = json.loads(termination_message(pod))
            pushed = {k: str(said[k])[:100] for k in ("digest", "modelDigest", "lineageHead")}
        except (ValueError, KeyError, TypeError):
            step.status.release = ReleaseStatus.model_validate(
                {
                    "phase": vocab.FAILED,
                    "reference": reference,
                    "attempts": attempt,
                    "message": "the release pod exited 0 without saying what it pushed",
                }
            )
            return True
        expected = step.current.model_digest
        if pushed["modelDigest"] != expected:  # the pod read the volume the aggregator wrote, or not
            step.status.release = ReleaseStatus.model_validate(
                {
                    "phase": vocab.FAILED,
                    "reference": reference,
                    "attempts": attempt,
                    "message": f"the release pod pushed {pushed['modelDigest']}; the training has {expected}",
                }
            )
            await self.emit(step.body, "Warning", "ReleaseFailed", step.status.release.message)
            return True
        where = f"{repository(reference)}@{pushed['digest']}"
        step.status.release = ReleaseStatus.model_validate(
            {
                "phase": vocab.SUCCEEDED,
                "reference": reference,
                "attempts": attempt,
                **pushed,
                "message": where,
            }
        )
        await self.emit(step.body, "Normal", "ModelReleased", f"model {pushed['modelDigest']} at {where}")
        log.info("model.released", training=ref.name, reference=reference, digest=pushed["digest"])
        return True
