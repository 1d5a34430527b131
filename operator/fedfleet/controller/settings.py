"""The operator's knobs, read once from the environment when the operator starts.

Nothing else in `fedfleet.controller` reads the environment: modules take an
`OperatorSettings`, so tests and benches build one directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class SettingsError(ValueError):
    """An environment variable the operator reads has a value it cannot use."""


@dataclass(frozen=True)
class OperatorSettings:
    # where clients and the operator reach a training's aggregator
    aggregator_address: str = "{service}.{namespace}.svc:{port}"
    # a client pod Pending longer than this is named in the training's status
    scheduling_timeout_seconds: float = 300.0
    # the longest a training waits between two passes when nothing wakes it earlier
    reconcile_interval_seconds: float = 1.0
    # between two passes while the training's running round is followed (WatchRound wakes it)
    round_watch_interval_seconds: float = 15.0
    # how long a complete certificate check is trusted before the Secrets are listed again
    certificate_check_seconds: float = 60.0
    # how often in-cluster sites are re-checked for their namespace and data claim
    site_check_seconds: float = 60.0
    # the site gateway remote sites dial (0: none); its names, and where its CA Secret lives
    site_gateway_port: int = 0
    site_gateway_enrol_port: int = 0  # 0: the gateway's port + 1
    site_gateway_names: tuple[str, ...] = ()
    # a remote site's pods of a training no pass claims this long: the hub's API is asked if it ended
    site_orphan_check_seconds: float = 30.0
    namespace: str = "default"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorSettings:
        defaults = cls()
        return cls(
            aggregator_address=env.get("FEDFLEET_AGGREGATOR_ADDRESS") or defaults.aggregator_address,
            scheduling_timeout_seconds=_seconds(
                env, "FEDFLEET_SCHEDULING_TIMEOUT", defaults.scheduling_timeout_seconds
            ),
            reconcile_interval_seconds=_seconds(
                env, "FEDFLEET_RECONCILE_INTERVAL", defaults.reconcile_interval_seconds
            ),
            certificate_check_seconds=_seconds(
                env, "FEDFLEET_CERTIFICATE_CHECK_SECONDS", defaults.certificate_check_seconds
            ),
            site_check_seconds=_seconds(env, "FEDFLEET_SITE_CHECK_SECONDS", defaults.site_check_seconds),
            site_gateway_port=_port(env, "FEDFLEET_SITE_GATEWAY_PORT"),
            site_gateway_enrol_port=_port(env, "FEDFLEET_SITE_GATEWAY_ENROL_PORT"),
            site_gateway_names=tuple(
                n.strip() for n in env.get("FEDFLEET_SITE_GATEWAY_NAMES", "").split(",") if n.strip()
            ),
            site_orphan_check_seconds=_seconds(
                env, "FEDFLEET_SITE_ORPHAN_CHECK_SECONDS", defaults.site_orphan_check_seconds
            ),
            namespace=env.get("FEDFLEET_NAMESPACE") or defaults.namespace,
        )

    def address(self, service: str, namespace: str, port: int) -> str:
        return self.aggregator_address.format(service=service, namespace=namespace, port=port)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw[:40]!r}: not a number of seconds") from None
    if not 0 < value < 1e7:
        raise SettingsError(f"{name}={raw[:40]!r}: must be a positive number of seconds")
    return value


def _port(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name) or "0"
    if not raw.isdigit() or int(raw) > 65535:
        raise SettingsError(f"{name}={raw[:40]!r}: not a port number (0: off)")
    return int(raw)
