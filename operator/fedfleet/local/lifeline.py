"""A lifeline from `fedfleet local run` to the processes it starts: they stop once it is gone.

The runner holds the only write end of a pipe and never writes; each child blocks on its read
end and reads end-of-file when the runner's end closes, however the runner went: SIGKILL and
the OOM killer included, which no signal handler of the runner sees. PR_SET_PDEATHSIG would
do the same on Linux only, and it needs a `preexec_fn`, which is unsafe in a threaded parent
such as the runner (gRPC's threads).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import TracebackType

from fedfleet.logs import get_logger

ENV = "FEDFLEET_LIFELINE_FD"  # in a child's environment: its read end
GRACE_SECONDS = 10.0  # after the SIGTERM to itself, as the runner's own stop allows

log = get_logger(component="lifeline")


class Lifeline:
    """The runner's end, open while it lives. Neither end is inherited unless passed."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()

    def child_env(self) -> dict[str, str]:
        return {ENV: str(self.read_fd)}

    def close(self) -> None:
        for fd in (self.read_fd, self._write_fd):
            os.close(fd)

    def __enter__(self) -> Lifeline:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def follow_lifeline() -> None:
    """In a child started with a lifeline: stop as on SIGTERM once the runner is gone."""
    value = os.environ.pop(ENV, None)  # not for this process's own children
    if value is None:
        return
    try:
        fd = int(value)
        os.fstat(fd)
    except (ValueError, OSError):
        raise SystemExit(f"fedfleet: {ENV} must name this process's open read end of its lifeline") from None
    threading.Thread(target=_stop_when_cut, args=(fd,), name="lifeline", daemon=True).start()


def _stop_when_cut(fd: int) -> None:
    try:
        while os.read(fd, 1):  # the runner never writes; end-of-file is all that counts
            pass
    except OSError as err:  # not a cut: better an orphan than a process stopped for nothing
        log.warning("lifeline.unreadable", error=err.strerror)
        return
    log.warning("lifeline.cut", reason="the local run that started this process is gone")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_SECONDS)
    log.error("lifeline.grace_expired", grace_seconds=GRACE_SECONDS)
    os._exit(128 + signal.SIGTERM)
