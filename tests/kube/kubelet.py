"""A test kubelet: runs the pods the operator creates as local processes and reports their status.

Volumes become directories (configMap and secret contents written out, one directory per
PersistentVolumeClaim shared by the pods that mount it); mount paths are rewritten to those
directories in the container's args and env. `fedfleet` runs as this interpreter's
`-m fedfleet`. Restart policies Always and OnFailure restart the container like a kubelet.

Given `nodes` (on a real control plane) it registers them as Nodes (capacity, labels, taints,
a Ready condition), runs only the pods the scheduler binds to them, and completes the graceful
deletion of its pods as a kubelet does; without, it runs every pod (the test API server has
no scheduler).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

Object = dict[str, Any]
FailPolicy = Callable[[Object], int | None]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    finished: bool = False
    log: Path | None = None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


NODE_CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "1100", "ephemeral-storage": "100Gi"}


def node_object(spec: Object) -> Object:
    """A Node as a kubelet registers it; `spec`: name, labels, capacity (extra), taints."""
    capacity = NODE_CAPACITY | dict(spec.get("capacity") or {})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec["name"],
            "labels": {"kubernetes.io/hostname": spec["name"], "kubernetes.io/os": "linux"}
            | dict(spec.get("labels") or {}),
        },
        "spec": {"taints": list(spec.get("taints") or [])},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "test kubelet is posting ready status",
                    "lastHeartbeatTime": _now(),
                    "lastTransitionTime": _now(),
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "test",
                "bootID": "",
                "containerRuntimeVersion": "process://",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "osImage": "",
                "systemUUID": "",
            },
        },
    }


class Kubelet:
    def __init__(
        self,
        api: client.ApiClient,
        root: Path,
        phase_only: bool = False,
        fail: FailPolicy | None = None,
        interval: float = 0.1,
        nodes: list[Object] | None = None,
        wrap: list[str] | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.wrap = list(wrap or [])  # every container runs under it, e.g. `ip netns exec NAME`
        self.api = api
        self.root = root
        self.phase_only = phase_only
        self.fail = fail
        self.interval = interval
        self.pods: dict[str, RunningPod] = {}
        self.nodes = [node_object(n) for n in nodes or []]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="test-kubelet", daemon=True)

    def start(self) -> Kubelet:
        for node in self.nodes:
            self._register(node)
        self._thread.start()
        return self

    def _register(self, node: Object) -> None:
        """Create (or take over) the Node; then set the taints and status we mean, since the
        TaintNodesByCondition admission adds not-ready on create and no node lifecycle
        controller runs here to lift it."""
        name = node["metadata"]["name"]
        try:
            self.core.create_node(node)
        except ApiException as err:
            if err.status != 409:
                raise
        self.core.patch_node(name, {"metadata": {"labels": node["metadata"]["labels"]}, "spec": node["spec"]})
        self.core.patch_node_status(name, {"status": node["status"]})

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for pod in self.pods.values():
            self._kill(pod)

    def logs(self, name: str) -> str:
        """The pod's log, also after the pod was deleted (as a log collector would keep it)."""
        pod = next((p for p in self.pods.values() if p.name == name), None)
        if pod and pod.log and pod.log.exists():
            return pod.log.read_text()
        kept = sorted((self.root / "logs").glob(f"*-{name}.log"))
        return kept[0].read_text() if kept else ""

    # -- loop ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except ApiException:
                pass  # the server is going away, or a pod vanished
            except Exception:  # a kubelet keeps going; the test reads what went wrong here
                self.root.mkdir(parents=True, exist_ok=True)
                with (self.root / "kubelet-errors.log").open("a") as out:
                    out.write(traceback.format_exc())
            self._stop.wait(self.interval)

    def _sync(self) -> None:
        seen = set()
        mine = {n["metadata"]["name"] for n in self.nodes}
        pods = [self.api.sanitize_for_serialization(i) for i in self.core.list_pod_for_all_namespaces().items]
        for pod in sorted(pods, key=lambda p: not p["metadata"].get("deletionTimestamp")):  # deletions first
            if mine and pod["spec"].get("nodeName") not in mine:
                continue  # not scheduled yet, or another kubelet's
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            if mine and pod["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(ApiException):  # one pod's trouble holds up no other
                    self._finish_deletion(pod, self.pods.pop(uid, None))
                continue
            running = self.pods.get(uid)
            if running is None:
                running = self.pods[uid] = RunningPod(
                    pod["metadata"]["namespace"], pod["metadata"]["name"], uid
                )
                self._start(pod, running)
            elif not running.finished:
                self._check(pod, running)
        for uid in [u for u in self.pods if u not in seen]:
            self._kill(self.pods.pop(uid))

    def _start(self, pod: Object, running: RunningPod) -> None:
        if self.phase_only:
            self._report(running, "Running", {"running": {"startedAt": _now()}})
            running.finished = True
            return
        code = self.fail(pod) if self.fail else None
        if code is not None:
            self._report(
                running, "Failed", {"terminated": {"exitCode": code, "reason": "Error", "finishedAt": _now()}}
            )
            running.finished = True
            return
        running.argv, running.env = self._command(pod)
        running.log = self.root / "logs" / f"{running.namespace}-{running.name}.log"
        running.log.parent.mkdir(parents=True, exist_ok=True)
        self._spawn(running)
        self._report(running, "Running", {"running": {"startedAt": _now()}})

    def _spawn(self, running: RunningPod) -> None:
        assert running.log is not None
        with running.log.open("ab") as out:
            running.process = subprocess.Popen(
                [*self.wrap, *running.argv], stdout=out, stderr=subprocess.STDOUT, env=running.env
            )

    def _check(self, pod: Object, running: RunningPod) -> None:
        process = running.process
        if process is None or process.poll() is None:
            return
        code = process.returncode
        message = _termination_message(running.env)
        policy = pod["spec"].get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            running.restarts += 1
            self._spawn(running)
            last = {"terminated": {"exitCode": code, "reason": "Error", "finishedAt": _now()}}
            self._report(running, "Running", {"running": {"startedAt": _now()}}, last)
            return
        running.finished = True
        phase = "Succeeded" if code == 0 else "Failed"
        self._report(
            running,
            phase,
            {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "finishedAt": _now(),
                    **({"message": message} if message else {}),
                }
            },
        )

    def _finish_deletion(self, pod: Object, running: RunningPod | None) -> None:
        """The API server waits for the kubelet to confirm a graceful deletion."""
        if running is not None:
            self._kill(running)
        meta = pod["metadata"]
        try:
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                # in the body: kube-apiserver reads DeleteOptions from a body, not the query, when given one
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
        except ApiException as err:
            if err.status not in (404, 409):
                raise

    def _kill(self, running: RunningPod) -> None:
        if running.process is not None and running.process.poll() is None:
            running.process.kill()
            running.process.wait()

    def _report(self, running: RunningPod, phase: str, state: Object, last: Object | None = None) -> None:
        status: Object = {
            "phase": phase,
            "podIP": "127.0.0.1",
            "containerStatuses": [
                {
                    "name": "main",
                    "state": state,
                    "ready": phase == "Running",
                    "restartCount": running.restarts,
                    "image": "local",
                    "imageID": "",
                    "started": phase == "Running",
                    **({"lastState": last} if last else {}),
                }
            ],
        }
        try:
            self.core.patch_namespaced_pod_status(running.name, running.namespace, {"status": status})
        except ApiException as err:
            if err.status != 404:
                raise

    # -- pod spec -> local process ---------------------------------------------------------------
    def _volume_dirs(self, pod: Object) -> dict[str, Path]:
        meta = pod["metadata"]
        base = self.root / "pods" / meta["namespace"] / meta["name"]
        dirs: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            if "persistentVolumeClaim" in volume:
                path = self.root / "claims" / meta["namespace"] / volume["persistentVolumeClaim"]["claimName"]
            else:
                path = base / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                source = self.core.read_namespaced_config_map(volume["configMap"]["name"], meta["namespace"])
                for key, value in (source.data or {}).items():
                    (path / key).write_text(value)
            if "secret" in volume:
                secret = self.core.read_namespaced_secret(volume["secret"]["secretName"], meta["namespace"])
                # `items` projects chosen keys to paths, as a kubelet does; without, every key by name
                paths = {i["key"]: i["path"] for i in volume["secret"].get("items") or []}
                for key, value in (secret.data or {}).items():
                    if paths and key not in paths:
                        continue
                    target = path / paths.get(key, key)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(value))
            dirs[name] = path
        return dirs

    def _command(self, pod: Object) -> tuple[list[str], dict[str, str]]:
        container = pod["spec"]["containers"][0]
        dirs = self._volume_dirs(pod)
        mounts = sorted(
            ((m["mountPath"], dirs[m["name"]]) for m in container.get("volumeMounts") or []),
            key=lambda m: -len(m[0]),
        )

        def local(text: str) -> str:
            for mount_path, directory in mounts:
                if text == mount_path or text.startswith(mount_path + "/"):
                    return str(directory) + text[len(mount_path) :]
            return text

        # Paths in the pod spec are mapped; the interpreter that stands in for the image's
        # `fedfleet` is not (it may itself live under a mount path such as /tmp).
        argv = [local(a) for a in list(container.get("command") or []) + list(container.get("args") or [])]
        if argv[:1] == ["fedfleet"]:
            argv = [sys.executable, "-m", "fedfleet", *argv[1:]]
        env = dict(os.environ)
        # the container's terminationMessagePath, as a kubelet mounts it (read back on exit)
        termination = (
            self.root / "pods" / pod["metadata"]["namespace"] / pod["metadata"]["name"] / "termination-log"
        )
        termination.parent.mkdir(parents=True, exist_ok=True)
        termination.unlink(missing_ok=True)
        env[TERMINATION_ENV] = str(termination)
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = local(str(var["value"]))
            elif ref := (var.get("valueFrom") or {}).get("fieldRef"):
                env[var["name"]] = str(pod["metadata"].get(ref["fieldPath"].split(".")[-1], ""))
        return argv, env


TERMINATION_ENV = "FEDFLEET_TERMINATION_LOG"  # where fedfleet writes its termination message
TERMINATION_LIMIT = 4096  # bytes a kubelet copies from the file into the pod's status


def _termination_message(env: dict[str, str] | None) -> str:
    path = Path((env or {}).get(TERMINATION_ENV, ""))
    if not path.name or not path.is_file():
        return ""
    return path.read_bytes()[:TERMINATION_LIMIT].decode(errors="replace").strip()
