"""What both lanes of `operator_scale.py --fanout` (same cluster and remote sites) measure the
same way: a kubelet that only flips pod phases, and the clock from apply to every client Running
with the operator's CPU seconds and peak RSS at that moment."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import config

from tests.kube.kubelet import Kubelet

POLL_SECONDS = 2.0


def phase_kubelet(kubeconfig: Path, root: Path, nodes: list[dict[str, Any]] | None = None) -> Kubelet:
    """A started kubelet that runs nothing: the figures are the operator's, not the pods'."""
    api = config.new_client_from_config(str(kubeconfig))
    return Kubelet(api, root, phase_only=True, interval=POLL_SECONDS, nodes=nodes).start()


def until_running(
    operator_pid: int, running_now: Callable[[], int], expected: int, started: float, timeout: float
) -> dict[str, Any]:
    """Poll `running_now` until it reaches `expected` or `timeout` seconds after `started`
    (a perf_counter reading); the figures then, as both lanes report them."""
    import psutil

    running = 0
    while time.perf_counter() - started < timeout:
        running = running_now()
        if running >= expected:
            break
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    cpu = psutil.Process(operator_pid).cpu_times()
    peak_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{operator_pid}/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    return {
        "pods": expected,
        "pods_running": running,
        "seconds_to_all_running": round(seconds, 2),
        "operator_cpu_seconds": round(cpu.user + cpu.system, 2),  # from the operator's start
        "operator_peak_rss_mb": round(peak_kb / 1024, 1),
    }
