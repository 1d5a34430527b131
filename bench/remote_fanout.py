"""The remote lane of `operator_scale.py --fanout`: one training over N remote sites x M clients
through the site gateway.

The hub is a test API server with the operator (its site gateway on) as a real process, given
only the hub's kubeconfig. The sites are N real `SiteAgent`s (fedfleet/sites/agent.py), run on
one event loop in this process, each enrolled with its own join token and holding its own
stream; they share one site test API server (one namespace each: N servers would measure this
process, not the hub) whose kubelet only flips pod phases, as the same-cluster lane's does.
Measured: seconds from apply to every client reported Running at the hub (the FederationSites'
`clientsRunning`, written by the gateway), and the hub operator's CPU seconds and peak RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import threading
import time
from pathlib import Path
from typing import Any

from fedfleet.controller.kube import Kube
from fedfleet.logs import configure
from fedfleet.sites import enrolment as enrol
from fedfleet.sites.commands import issue_join_token
from fedfleet.sites.policy import AgentConfig
from kubernetes import config

from bench.fanout_measure import phase_kubelet, until_running
from tests.controller.cluster import Cluster, start_operator, training_manifest, wait_for
from tests.dataplane.harness import free_port
from tests.kube.fixtures import ApiServerHandle, load_crds
from tests.sites.harness import HUB_NAMESPACE, gateway_ports, remote_site

TOKEN_TTL = datetime.timedelta(hours=1)


class Agents:
    """N site agents on a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[asyncio.Future[None]] = []

    def start(self, hub: Path, sites: Path, names: list[str], port: int, clients: int, root: Path) -> None:
        from fedfleet.sites.agent import SiteAgent  # its logger binds the level configured by now

        hub_kube = Kube(config.new_client_from_config(str(hub)))
        site_kube = Kube(config.new_client_from_config(str(sites)))

        async def enrol_and_run(name: str) -> None:
            site = enrol.SiteName(HUB_NAMESPACE, name)
            token, _, ca = await issue_join_token(hub_kube, site, HUB_NAMESPACE, TOKEN_TTL)
            token_file = root / f"{name}.token"
            token_file.write_text(token)
            agent_config = AgentConfig.model_validate(
                {
                    "site": name,
                    "namespace": name,
                    "hub": {
                        "address": f"127.0.0.1:{port}",
                        "caCertificate": ca.decode(),
                        "caFingerprint": enrol.fingerprint(ca),
                    },
                    "tokenFile": str(token_file),
                    "policy": {"maxClients": clients},
                }
            )
            await SiteAgent(agent_config, site_kube).run()

        for name in names:
            self.tasks.append(asyncio.run_coroutine_threadsafe(enrol_and_run(name), self.loop))

    def failures(self) -> list[str]:
        return [repr(t.exception()) for t in self.tasks if t.done() and t.exception() is not None]

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        time.sleep(0.5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def remote_fanout(sites: int, clients: int, timeout: float) -> dict[str, Any]:
    import tempfile

    import psutil

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        (root / "hub").mkdir()
        (root / "sites").mkdir()
        hub = ApiServerHandle(root / "hub")
        stack.callback(hub.close)
        for crd in load_crds():
            hub.register_crd(crd)
        time.sleep(0.2)
        hub_kubelet = phase_kubelet(hub.kubeconfig, root / "hub-kubelet")
        stack.callback(hub_kubelet.stop)
        port = gateway_ports()
        operator = start_operator(
            hub.kubeconfig,
            root / "operator.log",
            interval=None,
            FEDFLEET_LOG_LEVEL="WARNING",
            FEDFLEET_SITE_GATEWAY_PORT=str(port),
            FEDFLEET_NAMESPACE=HUB_NAMESPACE,
        )
        stack.callback(operator.wait, 30)
        stack.callback(operator.terminate)
        cluster = Cluster(hub.kubeconfig)
        wait_for(
            lambda: any(
                s["metadata"]["name"] == enrol.GATEWAY_CA_SECRET
                for s in cluster.items("Secret", HUB_NAMESPACE)
            ),
            60,
            "the gateway's CA",
        )
        site_api = ApiServerHandle(root / "sites")
        stack.callback(site_api.close)
        names = [f"site-{i:03d}" for i in range(sites)]
        for name in names:
            site_api.add_namespace(name)
            cluster.apply(remote_site(name, capacity=clients))
        site_kubelet = phase_kubelet(site_api.kubeconfig, root / "site-kubelet")
        stack.callback(site_kubelet.stop)
        configure(level="WARNING")  # 100 agents' info lines would bury the figures
        agents = Agents()
        stack.callback(agents.close)
        agents.start(hub.kubeconfig, site_api.kubeconfig, names, port, clients, root)

        def connected() -> int:
            return sum(
                bool((s.get("status") or {}).get("connected")) for s in cluster.items("FederationSite")
            )

        wait_for(lambda: connected() == sites or agents.failures(), timeout, "every agent connected", 1.0)
        if agents.failures():
            raise SystemExit(f"agents failed: {agents.failures()[:3]}")
        before = psutil.Process(operator.pid).cpu_times()
        expected = sites * clients
        aggregator_port = free_port()
        manifest = training_manifest(
            "scale", aggregator_port, names, clientsPerSite=clients, minClients=expected
        )
        manifest["spec"]["aggregator"]["externalAddress"] = f"127.0.0.1:{aggregator_port}"
        started = time.perf_counter()
        cluster.apply(manifest)

        def running_now() -> int:  # client pods at the sites, as their agents report them
            return sum(
                int((s.get("status") or {}).get("clientsRunning", 0)) for s in cluster.items("FederationSite")
            )

        figures = until_running(operator.pid, running_now, expected, started, timeout)
    from_apply = figures["operator_cpu_seconds"] - before.user - before.system
    return {
        "lane": "remote",
        "sites": sites,
        "clients_per_site": clients,
        **figures,
        "operator_cpu_seconds_from_apply": round(from_apply, 2),
    }
