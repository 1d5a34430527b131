"""The status fields `kubectl get ft` prints: why the training is in its phase (a condition's
reason, so InvalidSpec shows without `describe`), the newest model's held-out metric, and
epsilon rounded for reading. Derived from the rest of the status in one place."""

from __future__ import annotations

from typing import Any

Object = dict[str, Any]
COLUMN_FIELDS = {"reason": "reason", "heldOut": "held_out", "epsilonRounded": "epsilon_rounded"}
PREFERRED_METRICS = ("eval_accuracy", "eval_perplexity", "eval_loss")  # built-in tasks' held-out metrics


def _condition(conditions: list[Object], type_: str) -> Object:
    return next((c for c in conditions if c.get("type") == type_), {})


def reason(status: Object) -> str:
    conditions = list(status.get("conditions") or [])
    ready, failed = _condition(conditions, "Ready"), _condition(conditions, "Failed")
    if ready.get("status") == "False":
        return str(ready.get("reason", ""))  # InvalidSpec
    if failed.get("status") == "True":
        return str(failed.get("reason", ""))  # RoundsFailed
    return str(_condition(conditions, "Progressing").get("reason", ""))


def held_out(metrics: Object) -> str:
    found = [k for k in PREFERRED_METRICS if k in metrics] or sorted(
        k for k in metrics if k.startswith("eval_")
    )
    if not found:
        return ""
    return f"{found[0].removeprefix('eval_')}={float(metrics[found[0]]):.4g}"


def printed(status: Object) -> Object:
    """Column fields for `status` (the training's status with this pass's changes merged in)."""
    out: Object = {"reason": reason(status)}
    if shown := held_out(dict(status.get("metrics") or {})):
        out["heldOut"] = shown
    if status.get("epsilon") is not None:
        out["epsilonRounded"] = float(f"{float(status['epsilon']):.3g}")
    return out
