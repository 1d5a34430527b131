"""pytest fixtures: the Kubernetes API a test runs against, in two lanes: "test-server", the
project's real-HTTP test API server (or an external cluster named by FEDFLEET_TEST_KUBECONFIG),
and "real", a real control plane from KUBEBUILDER_ASSETS with the charts installed by Helm
(tests/kube/real_lane.py; skipped, with the line that says how to enable it, without them).
The test kubelet runs the pods in both."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import config

from tests.kube.control_plane import HOW_TO_ENABLE, ControlPlane, assets
from tests.kube.kubelet import Kubelet
from tests.kube.real_lane import NODES, RealLane
from tests.kube.server import Call, TestApiServer, serve

REPO = Path(__file__).resolve().parents[2]
OPERATOR_TOKEN = "fedfleet-operator"
OPERATOR_KUBECONFIG = "operator.kubeconfig"
# every request the operator made in this session, for tests/charts/test_rbac.py
OPERATOR_CALLS = pytest.StashKey[list[Call]]()


def write_kubeconfig(path: Path, url: str, token: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": url}}],
                "users": [{"name": "test", "user": {"token": token}}],
                "contexts": [
                    {"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "default"}}
                ],
            }
        )
    )
    return path


def operator_kubeconfig(kubeconfig: Path) -> Path:
    """The operator's own kubeconfig next to the test server's; a real cluster's is used as it is."""
    own = kubeconfig.with_name(OPERATOR_KUBECONFIG)
    return own if own.exists() else kubeconfig


class ApiServerHandle:
    """The server on a background event loop, with a kubeconfig for kubectl, kopf and clients."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.server = TestApiServer()
        self._host = host
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._holder: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name="test-apiserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("test API server did not start")
        self.url = self._holder["url"]
        self.kubeconfig = write_kubeconfig(root / "kubeconfig", self.url, "test")
        # the operator gets its own identity, as its ServiceAccount has on a cluster, so the
        # server's records tell its requests from the test's and the kubelet's
        write_kubeconfig(root / OPERATOR_KUBECONFIG, self.url, OPERATOR_TOKEN)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        ready = asyncio.Event()

        async def main() -> None:
            task = asyncio.create_task(serve(self.server, 0, ready, self._stop, self._holder, self._host))
            await ready.wait()
            self._ready.set()
            await task

        self._loop.run_until_complete(main())

    def register_crd(self, crd: dict[str, Any]) -> None:
        self._loop.call_soon_threadsafe(self.server.register_crd, crd)

    def add_namespace(self, name: str) -> None:
        self._loop.call_soon_threadsafe(self.server.add_namespace, name)

    @property
    def calls(self) -> list[Any]:
        return list(self.server.calls)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def load_crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]


@pytest.fixture
def kube_api(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ApiServerHandle]:
    handle = ApiServerHandle(tmp_path)
    for crd in load_crds():
        handle.register_crd(crd)
    yield handle
    handle.close()
    request.config.stash.setdefault(OPERATOR_CALLS, []).extend(
        c for c in handle.calls if c.user == OPERATOR_TOKEN
    )


# the real lanes of this process, by their admin kubeconfig (the kubelet registers Nodes there)
REAL_LANES: dict[Path, RealLane] = {}
LANES = ("test-server", "real")


def start_real_lane(root: Path) -> RealLane:
    """A control plane from KUBEBUILDER_ASSETS with the hub chart installed (skips without it)."""
    binaries = assets()
    if binaries is None:
        pytest.skip(HOW_TO_ENABLE)
    lane = RealLane(ControlPlane(binaries, root).start())
    try:
        lane.install_hub()
    except BaseException:
        lane.close()
        raise
    REAL_LANES[lane.kubeconfig] = lane
    return lane


@pytest.fixture(scope="session")
def real_lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLane]:
    lane = start_real_lane(tmp_path_factory.mktemp("real-lane"))
    yield lane
    REAL_LANES.pop(lane.kubeconfig, None)
    lane.close()


@pytest.fixture(params=LANES)
def kubeconfig(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The lane's kubeconfig: the test server (or FEDFLEET_TEST_KUBECONFIG's cluster, CRDs
    installed), or the real control plane, cleaned after each test."""
    if request.param == "real":
        lane: RealLane = request.getfixturevalue("real_lane")
        yield lane.kubeconfig
        lane.clean()
        return
    external = os.environ.get("FEDFLEET_TEST_KUBECONFIG")
    yield Path(external) if external else request.getfixturevalue("kube_api").kubeconfig


@pytest.fixture
def real_kubeconfig(real_lane: RealLane) -> Iterator[Path]:
    """For tests of the real control plane alone (Helm, RBAC, scheduling)."""
    yield real_lane.kubeconfig
    real_lane.clean()


def real_lane_of(kubeconfig: Path) -> RealLane | None:
    return REAL_LANES.get(kubeconfig)


def start_kubelet(kubeconfig: Path, root: Path, **options: Any) -> Kubelet:
    """On a real control plane the kubelet registers NODES and runs what the scheduler binds there."""
    if kubeconfig in REAL_LANES:
        options.setdefault("nodes", NODES)
    return Kubelet(config.new_client_from_config(str(kubeconfig)), root, **options).start()
