"""The readable side of `fedfleet lineage verify`: one line per round, then the verdict."""

from __future__ import annotations

from fedfleet.provenance.verify import Verified, abbreviate


def _clients(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} +{len(names) - limit}" if len(names) > limit else shown or "-"


def render(result: Verified) -> str:
    lines = [f"{'round':>5}  {'finished':<20} {'model':<20} {'epsilon':>8}  {'signer':<20} clients"]
    for record, signer in zip(result.records, result.signers, strict=True):
        finished = str(record.get("finished") or record.get("recorded") or "")[:19].replace("T", " ")
        epsilon = record.get("epsilon")
        lines.append(
            f"{record.get('round', '?'):>5}  {finished:<20} {abbreviate(record.get('model_digest')):<20} "
            f"{f'{epsilon:.3f}' if isinstance(epsilon, int | float) else '-':>8}  "
            f"{abbreviate(signer) if signer else 'unsigned':<20} {_clients(record.get('clients') or [])}"
        )
    if result.records:
        base = result.records[0].get("base_model") or {}
        lines.append(
            f"base model: {base.get('digest') or 'none (built by task ' + str(base.get('task')) + ')'}"
        )
    lines.append(f"lineage head: {result.head or 'none'}")
    if result.problems:
        lines.append(f"TAMPERED or broken: {len(result.problems)} problem(s)")
        lines.extend(f"  {problem}" for problem in result.problems)
    else:
        signers = sorted({s for s in result.signers if s})
        signed = sum(1 for s in result.signers if s)
        if not signers:
            lines.append(
                f"OK (unsigned): {len(result.records)} records intact and chained, but not signed: "
                "this shows consistency, not who wrote them"
            )
        else:
            who = "the given public key" if result.pinned else ", ".join(signers)
            lines.append(f"OK: {len(result.records)} records intact and chained, {signed} signed by {who}")
            if not result.pinned:
                lines.append("  (pass --public-key, the key in the training's status, to prove who signed)")
    return "\n".join(lines)
