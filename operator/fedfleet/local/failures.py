"""The cause of a failed local run, from its processes' logs: the last fatal error a client or
the aggregator wrote (an uncaught exception's last line, or an error-level event), so the run's
one-line failure says why the processes died, not only that too few were left."""

from __future__ import annotations

import json
import re
from pathlib import Path

TAIL_BYTES = 64 * 1024  # only the end of each log is read: logs are unbounded, the message is not
MAX_MESSAGE = 300
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)): (.+)$")
_FATAL_LEVELS = frozenset({"error", "critical", "exception"})


def _tail(path: Path) -> list[str]:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - TAIL_BYTES))
        return handle.read().decode(errors="replace").splitlines()


def _fatal_line(line: str, following: list[str]) -> str | None:
    if match := _EXCEPTION.match(line.strip()):
        message = [match[2]]  # a message over several lines continues indented (torch's size mismatch)
        for more in following:
            if not more[:1].isspace() or more.lstrip().startswith("File "):
                break
            message.append(more.strip())
        return f"{match[1]}: {' '.join(message)}"
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("level") not in _FATAL_LEVELS:
        return None
    detail = event.get("reason") or event.get("error") or event.get("exception", "").strip().splitlines()[-1:]
    detail = detail[0] if isinstance(detail, list) and detail else detail
    return f"{event.get('event')}: {detail}" if detail else None


def last_fatal_error(logs_dir: Path) -> str | None:
    """`client site-a-0: RuntimeError: ...` from the most recently written log that has one."""
    if not logs_dir.is_dir():
        return None
    # clients first: the aggregator's own failures already name its log in the runner's reason
    logs = sorted(
        logs_dir.glob("*.log"), key=lambda p: (p.stem != "aggregator", p.stat().st_mtime), reverse=True
    )
    for path in logs:
        lines = _tail(path)
        found = [f for i, line in enumerate(lines) if (f := _fatal_line(line, lines[i + 1 : i + 20]))]
        if found:
            message = f"{path.stem}: {found[-1]}"
            return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
    return None
