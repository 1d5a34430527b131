"""The task's own config check, run in a short-lived process.

Importing a task pulls in its framework (torch: several hundred MB resident) which the
operator itself never needs, so the operator asks a child process once per spec generation of
a training that is not running yet. A child that fails or hangs refuses nothing: the clients
still check the config themselves and exit 78 with the reason.

    python -m fedfleet.controller.task_check < '{"name": ..., "config": {...}}'
"""

from __future__ import annotations

import asyncio
import json
import sys

from fedfleet.api.training import TaskSpec
from fedfleet.logs import get_logger

CHECK_TIMEOUT_SECONDS = 120.0
MAX_REPLY_BYTES = 4096
log = get_logger(component="operator")


def check(task: TaskSpec) -> str:
    """The task's refusal of its config ('' when it accepts it, or cannot be imported here)."""
    import importlib.util

    from fedfleet.tasks.base import BUILTIN_TASKS, TaskError, load_task

    if task.name not in BUILTIN_TASKS:  # a custom task only the clients' image may carry
        try:
            if importlib.util.find_spec(task.name.partition(":")[0]) is None:
                return ""
        except (ImportError, ValueError):
            return ""
    try:
        load_task(task)
    except TaskError as err:
        return str(err)
    return ""


async def task_config_error(task: TaskSpec, timeout: float = CHECK_TIMEOUT_SECONDS) -> str | None:
    """Run `check` in a child process; None when the config is accepted or the check failed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fedfleet.controller.task_check",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(task.model_dump_json().encode()), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("task_check.timeout", task=task.name, seconds=timeout)
        return None
    if proc.returncode != 0:
        log.warning(
            "task_check.failed",
            task=task.name,
            code=proc.returncode,
            stderr=err[-500:].decode(errors="replace"),
        )
        return None
    message = out[:MAX_REPLY_BYTES].decode(errors="replace").strip()
    return message or None


def main() -> int:
    task = TaskSpec.model_validate(json.loads(sys.stdin.read(1 << 20)))
    print(check(task))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
