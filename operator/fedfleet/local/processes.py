"""Local stand-ins for pods: child processes with log files, restarted with backoff when they fail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedfleet.api.training import RetrySpec
from fedfleet.controller.core import restart_delay
from fedfleet.local.lifeline import Lifeline
from fedfleet.logs import get_logger
from fedfleet.provenance.policy import REFUSED_EXIT_CODE

log = get_logger(component="local")


@dataclass
class Supervised:
    """One process the runner keeps alive, like a pod with restartPolicy OnFailure."""

    name: str
    args: list[str]
    log_path: Path
    retry: RetrySpec
    restartable: bool = True
    lifeline: Lifeline | None = None  # stops the process once the runner is gone
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    given_up: bool = False
    exit_codes: list[int] = field(default_factory=list)
    next_start: float = 0.0

    def start(self) -> None:
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = os.environ | {"FEDFLEET_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        passed: tuple[int, ...] = ()
        if self.lifeline is not None:
            env |= self.lifeline.child_env()
            passed = (self.lifeline.read_fd,)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fedfleet", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=passed,
            )
        log.info("process.started", name=self.name, pid=self.process.pid, attempt=self.starts)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def succeeded(self) -> bool:
        return self.process is not None and self.process.poll() == 0

    def poll_failure(self) -> int | None:
        """The exit code if the process has just failed (reported once), else None."""
        if self.process is None or self.process.poll() in (None, 0):
            return None
        code = self.process.returncode
        self.process = None
        self.exit_codes.append(code)
        # a refusal (the site's policy or the task's configuration) would only repeat itself
        refused = code == REFUSED_EXIT_CODE
        delay = restart_delay(self.retry, self.starts) if self.restartable and not refused else None
        if delay is None:
            self.given_up = True
            log.error("process.given_up", name=self.name, exit_code=code, starts=self.starts, refused=refused)
        else:
            self.next_start = time.monotonic() + delay
            log.warning(
                "process.failed", name=self.name, exit_code=code, restart_in=delay, attempt=self.starts
            )
        return code

    def due_for_restart(self) -> bool:
        return (
            self.process is None
            and not self.given_up
            and self.starts > 0
            and time.monotonic() >= self.next_start
        )

    def stop(self, timeout: float = 10.0) -> None:
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
