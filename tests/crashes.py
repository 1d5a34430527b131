"""kill -9 in the middle of a checkpoint writer's rounds, wherever the disk is fast or slow."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

from tests.controller.cluster import wait_for

ROUNDS_PER_RUN = 20
"""A writer stops after this many rounds; it is killed long before on any machine. The bound is
what keeps a test's disk use small if the kill comes late: a fixed-time kill let a fast disk
write 5.8 GB in one test, and CI ran out of space."""


def finished_rounds(rounds_dir: Path) -> int:
    return sum(1 for _ in rounds_dir.glob("round-*"))  # none while the folder does not exist


def kill_9_mid_writes(command: list[str], rounds_dir: Path, at_least: int, rng: random.Random) -> None:
    """Run `command` until `rounds_dir` holds `at_least` finished rounds, then SIGKILL it at a
    random instant within the next few rounds' writes. Waiting for progress rather than a fixed
    time puts the kill inside the writes on a slow machine and bounds what a fast one writes."""
    writer = subprocess.Popen(command)

    def progressed() -> bool:
        assert writer.poll() is None, f"the writer exited ({writer.returncode}) before round {at_least}"
        return finished_rounds(rounds_dir) >= at_least

    try:
        wait_for(progressed, 120, f"the writer's round {at_least}", interval=0.005)
        time.sleep(rng.uniform(0, 0.05))
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
