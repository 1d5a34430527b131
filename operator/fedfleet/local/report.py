"""What a local run leaves behind: metrics.json, a loss/accuracy plot, and a table on the terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedfleet.convert import site_training_account
from fedfleet.local.runner import RunResult


def round_rows(result: RunResult) -> list[dict[str, Any]]:
    """One row per training round; its eval_* are those of the model the round produced (the
    aggregator attributes them: measured in the next round, or the final evaluation round)."""
    rows = []
    for r in result.rounds:
        evaluated = r["metrics"]
        rows.append(
            {
                "round": r["round"],
                "clients": f"{len(r['reported'])}/{len(r['participants'])}",
                "dropped": r["dropped"],
                "train_loss": r["metrics"].get("train_loss"),
                "eval_loss": evaluated.get("eval_loss"),
                "eval_accuracy": evaluated.get("eval_accuracy"),
                "seconds": r["seconds"],
                "bytes": r["bytes"],  # update payload the aggregator accepted this round
                "model_digest": r["model_digest"],
                "epsilon": r.get("epsilon"),  # the training's epsilon once this round was released
                "privacy": r.get("privacy"),  # what DP the round carried (clip, noise, cohort)
            }
        )
    return rows


def write_metrics(result: RunResult, out_dir: Path) -> Path:
    path = out_dir / "metrics.json"
    rows = round_rows(result)
    final = rows[-1] if rows else {}
    path.write_text(
        json.dumps(
            {
                "training": result.training,
                "rounds": rows,
                "final": {
                    "model_version": result.model_version,
                    "model_digest": result.model_digest,
                    "eval_accuracy": final.get("eval_accuracy"),
                    "eval_loss": final.get("eval_loss"),
                    "epsilon": final.get("epsilon"),
                    "stop_reason": result.stop_reason,
                    "stop_message": result.stop_message,
                },
                "lineage": {  # check with: fedfleet lineage verify <out>/state --public-key <publicKey>
                    "head": result.lineage_head,
                    "publicKey": result.lineage_public_key,
                    "keyFingerprint": result.lineage_key_fingerprint,
                },
                "sites": {a.site: site_training_account(a).dump() for a in result.sites},
                "seconds": result.seconds,
            },
            indent=2,
        )
    )
    return path


def write_plot(result: RunResult, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = round_rows(result)
    rounds = [r["round"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(rounds, [r["train_loss"] for r in rows], marker="o", label="train loss")
    ax_loss.plot(rounds, [r["eval_loss"] for r in rows], marker="o", label="held-out loss")
    ax_loss.set_xlabel("round")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(rounds, [r["eval_accuracy"] for r in rows], marker="o", color="tab:green")
    ax_acc.set_xlabel("round")
    ax_acc.set_ylabel("held-out accuracy")
    ax_acc.set_ylim(0, 1)
    fig.suptitle(f"{result.training}: federated training")
    fig.tight_layout()
    path = out_dir / "metrics.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_table(result: RunResult, console: Console | None = None) -> None:
    rows = round_rows(result)
    private = any(row["epsilon"] is not None for row in rows)
    table = Table(
        title=f"{result.training}: {result.model_version} rounds in {result.seconds:.1f}s",
        caption=f"{result.stop_reason}: {result.stop_message}" if result.stop_reason else None,
    )
    columns = ["round", "clients", "train loss", "held-out loss", "accuracy", "upload bytes", "seconds"]
    for column in columns + (["epsilon"] if private else []):
        table.add_column(column, justify="right")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for row in rows:
        cells = [
            str(row["round"]),
            row["clients"],
            fmt(row["train_loss"], ".4f"),
            fmt(row["eval_loss"], ".4f"),
            fmt(row["eval_accuracy"], ".3f"),
            f"{row['bytes']:,}",
            fmt(row["seconds"], ".1f"),
        ]
        table.add_row(*cells, *([fmt(row["epsilon"], ".4g")] if private else []))
    console = console or Console()
    console.print(table)
    if result.sites:
        console.print(site_table(result))


def site_table(result: RunResult) -> Table:
    """What each site's clients did, as the aggregator counted them (a cluster shows the same
    on the FederationSite: `kubectl get federationsites -o wide`)."""
    table = Table(title="sites")
    for column in ("site", "updates", "refused", "received bytes", "sent bytes", "client-seconds"):
        table.add_column(column, justify="right")
    for account in sorted(result.sites, key=lambda a: a.site):
        table.add_row(
            account.site,
            str(account.updates_accepted),
            str(account.updates_refused),
            f"{account.bytes_received:,}",
            f"{account.bytes_sent:,}",
            f"{account.client_seconds:.1f}",
        )
    return table
