"""A hub cluster and site clusters for the remote-site tests: one test API server and one test
kubelet per cluster, the hub operator (given only the hub's kubeconfig) with its site gateway,
and one `fedfleet site-agent` process per site (given only its own cluster's kubeconfig)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.controller.cluster import GROUP, VERSION, Cluster, start_operator, wait_for
from tests.dataplane.harness import free_port
from tests.kube.fixtures import ApiServerHandle, load_crds, start_kubelet, write_kubeconfig
from tests.kube.kubelet import Kubelet
from tests.sites.netns import SiteNetwork

AGENT_TOKEN = "fedfleet-site-agent"  # the agent's identity at its own API server
HUB_NAMESPACE = "default"


def remote_site(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FederationSite",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"remote": True} | spec,
    }


@dataclass
class SiteCluster:
    name: str
    root: Path
    api: ApiServerHandle
    kubelet: Kubelet
    agent_kubeconfig: Path
    config: Path
    log: Path
    network: SiteNetwork | None = None  # its own network namespace, else the host's
    agent: subprocess.Popen[bytes] | None = None

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.api.kubeconfig)

    def start_agent(self) -> None:
        env = os.environ | {"KUBECONFIG": str(self.agent_kubeconfig), "FEDFLEET_LOG_FORMAT": "json"}
        with self.log.open("ab") as out:
            self.agent = subprocess.Popen(
                [
                    *(self.network.wrap() if self.network else []),
                    *(sys.executable, "-m", "fedfleet", "site-agent", "--config", str(self.config)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def kill_agent(self) -> None:
        if self.agent is not None:
            self.agent.send_signal(signal.SIGKILL)
            self.agent.wait()
            self.agent = None

    def client_pods(self) -> list[dict[str, Any]]:
        return self.cluster.items("Pod", selector="app.kubernetes.io/component=client")

    def callers(self) -> set[str]:
        """Who called this site's API server, apart from the test's kubelet."""
        return {c.user for c in self.api.calls} - {"test"}

    def ran_one_pod_and_removed_it(self, training: str) -> None:
        """The agent made the training's one client pod, never replaced it, and removed it once
        the training ended, with the client's key and manifest: its pod calls at this site are one
        create, then one delete. The agent deletes the pod before the Secret and ConfigMap, so all
        three are awaited."""
        owned = f"fedfleet.io/training={training}"
        kinds = ("Pod", "Secret", "ConfigMap")
        wait_for(
            lambda: not any(self.cluster.items(kind, selector=owned) for kind in kinds),
            30,
            f"{self.name} removes the ended training's pod, key and manifest",
        )
        pod_calls = [
            c.verb
            for c in self.api.calls
            if (c.user, c.resource) == (AGENT_TOKEN, "pods") and c.verb in ("create", "delete")
        ]
        assert pod_calls == ["create", "delete"], (self.name, pod_calls)


@dataclass
class Federation:
    root: Path
    hub: ApiServerHandle
    hub_kubelet: Kubelet
    gateway_port: int
    operator_log: Path
    operator: subprocess.Popen[bytes] | None = None
    sites: dict[str, SiteCluster] = field(default_factory=dict)
    hub_host: str = "127.0.0.1"  # where sites reach the gateway and the aggregators

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.hub.kubeconfig)

    def start_operator(self) -> None:
        self.operator = start_operator(
            self.hub.kubeconfig,
            self.operator_log,
            FEDFLEET_SITE_GATEWAY_PORT=str(self.gateway_port),
            FEDFLEET_NAMESPACE=HUB_NAMESPACE,
            FEDFLEET_SITE_ORPHAN_CHECK_SECONDS="2",
        )

    def kill_operator(self) -> None:
        if self.operator is not None:
            self.operator.send_signal(signal.SIGKILL)
            self.operator.wait()
            self.operator = None

    def join_token(self, site: str, ttl_minutes: int = 10) -> tuple[str, str, str]:
        """`fedfleet site join-token` as the hub admin runs it: (token, CA fingerprint, CA PEM)."""
        ca_out = self.root / f"{site}-hub-ca.pem"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedfleet",
                "site",
                "join-token",
                site,
                "--namespace",
                "default",
                "--hub-namespace",
                HUB_NAMESPACE,
                "--ttl-minutes",
                str(ttl_minutes),
                "--ca-out",
                str(ca_out),
            ],
            env=os.environ | {"KUBECONFIG": str(self.hub.kubeconfig)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        token = re.search(r"^token: (\S+)$", done.stdout, re.M)
        fingerprint = re.search(r"fingerprint \(sha256\): ([0-9a-f]{64})$", done.stdout, re.M)
        assert token and fingerprint, done.stdout
        return token[1], fingerprint[1], ca_out.read_text()

    def add_site(
        self,
        name: str,
        policy: dict[str, Any] | None = None,
        network: SiteNetwork | None = None,
        **site_spec: Any,
    ) -> SiteCluster:
        """A site cluster with its agent configured as the site chart would, enrolled with a fresh
        token. With `network`, its agent and client pods run in that namespace, and its API
        server listens on the host's end of the namespace's link."""
        root = self.root / name
        root.mkdir()
        api = ApiServerHandle(root, host=network.host_ip if network else "127.0.0.1")
        kubelet = start_kubelet(api.kubeconfig, root / "kubelet", wrap=network.wrap() if network else None)
        agent_kubeconfig = write_kubeconfig(root / "agent.kubeconfig", api.url, AGENT_TOKEN)
        self.cluster.apply(remote_site(name, **site_spec))
        token, fingerprint, ca = self.join_token(name)
        (root / "token").write_text(token)
        config = {
            "site": name,
            "namespace": "default",
            "hub": {
                "address": f"{self.hub_host}:{self.gateway_port}",
                "caCertificate": ca,
                "caFingerprint": fingerprint,
            },
            "tokenFile": str(root / "token"),
            "policy": {"maxClients": 4} | (policy or {}),
            "heartbeatSeconds": 1,
            "resyncSeconds": 0.5,
        }
        (root / "agent.yaml").write_text(yaml.safe_dump(config))
        site = SiteCluster(
            name, root, api, kubelet, agent_kubeconfig, root / "agent.yaml", root / "agent.log", network
        )
        self.sites[name] = site
        return site

    def wait_gateway(self) -> None:
        wait_for(
            lambda: any(
                s["metadata"]["name"] == "fedfleet-site-gateway-ca" for s in self.cluster.items("Secret")
            ),
            60,
            "the site gateway's CA",
        )
        # the CA is made before the server listens: wait for both ports too
        wait_for(
            lambda: all(_listening(p) for p in (self.gateway_port, self.gateway_port + 1)), 30, "the gateway"
        )

    def site_status(self, name: str) -> dict[str, Any]:
        found = self.cluster.get("FederationSite", "default", name) or {}
        return dict(found.get("status") or {})

    def close(self) -> None:
        for site in reversed(self.sites.values()):  # kmock's DNS interceptors unwind in reverse
            site.kill_agent()
            site.kubelet.stop()
            site.api.close()
        if self.operator is not None:
            self.operator.terminate()
            try:
                self.operator.wait(15)
            except subprocess.TimeoutExpired:
                self.operator.kill()
        self.hub_kubelet.stop()
        self.hub.close()

    def logs(self) -> str:
        parts = [self.operator_log.read_text()[-4000:] if self.operator_log.exists() else ""]
        for site in self.sites.values():
            parts.append(
                f"--- {site.name} agent\n" + (site.log.read_text()[-3000:] if site.log.exists() else "")
            )
        return "\n".join(parts)


def gateway_ports() -> int:
    """A port that, with the next one, the gateway can listen on (every address, as it does):
    a free port's neighbour may be any process's port, and the gateway then never serves."""
    for _ in range(100):
        port = free_port()
        if port + 1 < 65536 and all(_bindable(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no two free neighbouring ports")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def start_federation(root: Path) -> Federation:
    hub_root = root / "hub"
    hub_root.mkdir()
    hub = ApiServerHandle(hub_root)
    for crd in load_crds():
        hub.register_crd(crd)
    kubelet = start_kubelet(hub.kubeconfig, hub_root / "kubelet")
    federation = Federation(root, hub, kubelet, gateway_ports(), hub_root / "operator.log")
    federation.start_operator()
    federation.wait_gateway()
    return federation
