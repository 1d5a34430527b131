"""`fedfleet plan`'s report: plain lines a person reads before applying a manifest."""

from __future__ import annotations

from fedfleet.plan.checks import Plan

SHOWN_ROUNDS = 12  # epsilon of the first rounds, then of the last


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def render(plan: Plan) -> str:
    spec, meta = plan.training.spec, plan.training.metadata
    head = "OK" if plan.ok else f"{len(plan.errors)} error(s)"
    lines = [f"plan for {meta.namespace}/{meta.name} ({plan.source}): {head}"]
    lines += [f"  error: {plan.source}: {e}" for e in plan.errors]
    lines += [f"  warning: {w}" for w in plan.warnings]
    sites = ", ".join(spec.sites.names) or "by selector"
    lines.append(
        f"  sites: {sites}; {spec.clients_per_site} client(s) each; {spec.rounds} rounds; "
        f"minClients {spec.min_clients}; {spec.strategy.name}; "
        f"SecAgg+ {'on' if spec.secure_aggregation.enabled else 'off'}; "
        f"DP {spec.privacy.mode if spec.privacy.enabled else 'off'}"
    )
    if plan.traffic is not None:
        t = plan.traffic
        lines.append(
            f"  bytes per round: {human_bytes(t.round_bytes)} ({t.round_bytes} B) for {t.clients} clients: "
            f"upload {human_bytes(t.upload_bytes)} each ({t.encoding}, {t.ratio:.2f}x float32), "
            f"download {human_bytes(t.download_bytes)} each; model {t.values} federated values"
        )
    elif plan.traffic_unknown:
        lines.append(f"  bytes per round: unknown: {plan.traffic_unknown}")
    if (p := plan.privacy) is not None:
        budget = "no epsilonBudget" if p.budget is None else f"epsilonBudget {p.budget:g}"
        lines.append(
            f"  privacy: {budget} at delta {spec.privacy.delta:g}, sampling rate {p.sampling_rate:g}, "
            f"noise multiplier {p.noise_multiplier:g} per round: {p.allowed_rounds} of {spec.rounds} "
            "rounds allowed"
        )
        listed = list(enumerate(p.epsilons, start=1))
        if len(listed) > SHOWN_ROUNDS:
            listed = listed[: SHOWN_ROUNDS - 2] + listed[-2:]
        lines.append("  epsilon after round: " + ", ".join(f"{n}: {e:.4g}" for n, e in listed))
    lines += [f"  site {line}" for line in plan.site_lines]
    return "\n".join(lines)
