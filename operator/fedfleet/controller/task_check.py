"""The task's own config check, run in a short-lived process.

Importing a task pulls in its framework (torch: several hundred MB resident) which the
operator itself never needs, so the operator asks a child process once per spec generation of
a training that is not running yet. A child that fails or hangs refuses nothing: the clients
still check the config themselves and exit 78 with the reason. Children are few (a hundred
trainings applied at once must not start a hundred torch imports) and an answer is kept per
task config, which is what it depends on.

    python -m fedfleet.controller.task_check < '{"name": ..., "config": {...}}'
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections import OrderedDict

from fedfleet.api.training import TaskSpec
from fedfleet.logs import get_logger

CHECK_TIMEOUT_SECONDS = 120.0
MAX_REPLY_BYTES = 4096
MAX_CONCURRENT_CHECKS = 2
MAX_REMEMBERED = 256
log = get_logger(component="operator")
_answers: OrderedDict[str, str | None] = OrderedDict()  # task config digest -> refusal
_running: dict[str, asyncio.Future[str | None]] = {}  # a config being checked: later askers wait
_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}  # the operator runs one loop


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
    """The task's refusal of `task`; None when the config is accepted or the check failed.

    One child per distinct config at a time, at most MAX_CONCURRENT_CHECKS children at once;
    a definite answer is remembered (a failed check is asked again next time)."""
    payload = task.model_dump_json().encode()
    key = hashlib.sha256(payload).hexdigest()
    if key in _answers:
        _answers.move_to_end(key)
        return _answers[key]
    if key in _running:
        return await asyncio.shield(_running[key])
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()
    _running[key] = future
    try:
        async with _slots.setdefault(loop, asyncio.Semaphore(MAX_CONCURRENT_CHECKS)):
            answer, definite = await _check_in_child(task.name, payload, timeout)
        if definite:
            _answers[key] = answer
            while len(_answers) > MAX_REMEMBERED:
                _answers.popitem(last=False)
        future.set_result(answer)
        return answer
    except BaseException as err:
        future.set_exception(err)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waited
        raise
    finally:
        del _running[key]


async def _check_in_child(name: str, payload: bytes, timeout: float) -> tuple[str | None, bool]:
    """(refusal or None, whether the answer is definite)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fedfleet.controller.task_check",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(payload), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("task_check.timeout", task=name, seconds=timeout)
        return None, False
    if proc.returncode != 0:
        log.warning(
            "task_check.failed",
            task=name,
            code=proc.returncode,
            stderr=err[-500:].decode(errors="replace"),
        )
        return None, False
    message = out[:MAX_REPLY_BYTES].decode(errors="replace").strip()
    return message or None, True


def main() -> int:
    task = TaskSpec.model_validate(json.loads(sys.stdin.read(1 << 20)))
    print(check(task))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
