"""`fedfleet site join-token NAME` (the hub admin) and `fedfleet site-agent` (the site's chart)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import sys
from pathlib import Path
from typing import Any

from fedfleet import vocabulary as vocab
from fedfleet.controller.kube import Kube, path
from fedfleet.sites import enrolment as enrol


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    site = commands.add_parser("site", help="sites in their own clusters (hub admin)")
    site_commands = site.add_subparsers(dest="site_command", required=True)
    token = site_commands.add_parser(
        "join-token", help="a one-time, short-lived token for a remote FederationSite's agent to enrol"
    )
    token.add_argument("name", help="the FederationSite (spec.remote: true)")
    token.add_argument("-n", "--namespace", default="default", help="the FederationSite's namespace")
    token.add_argument(
        "--hub-namespace", default="fedfleet-system", help="the operator's namespace (its gateway CA Secret)"
    )
    token.add_argument("--ttl-minutes", type=int, default=60, help="the token expires after this (1..1440)")
    token.add_argument("--ca-out", type=Path, default=None, help="write the gateway CA's PEM (public) here")
    agent = commands.add_parser("site-agent", help="run a remote site's agent (in the site's cluster)")
    agent.add_argument("--config", type=Path, required=True, help="the agent's YAML (site chart values)")
    for parser in (token, agent):
        parser.add_argument("--log-format", choices=["json", "console"], help="default: console on a TTY")
        parser.add_argument("--log-level", default=None)


def join_token(args: argparse.Namespace) -> int:
    if not 1 <= args.ttl_minutes <= 1440:
        print("fedfleet: --ttl-minutes must be 1..1440", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_join_token(args))
    except enrol.EnrolmentError as err:
        print(f"fedfleet: {err}", file=sys.stderr)
        return 1


async def issue_join_token(
    kube: Kube, site_name: enrol.SiteName, hub_namespace: str, ttl: datetime.timedelta
) -> tuple[str, datetime.datetime, bytes]:
    """A new one-time token for a remote site (only its hash is stored, in a Secret the site
    owns; it replaces the previous one): the token, its expiry and the gateway CA's PEM."""
    site = await kube.get(vocab.SITE, site_name.namespace, site_name.name)
    if site is None:
        raise enrol.EnrolmentError(f"no FederationSite {site_name}")
    if not (site.get("spec") or {}).get("remote"):
        raise enrol.EnrolmentError(f"FederationSite {site_name} is not remote (spec.remote: true)")
    ca = await kube.get("Secret", hub_namespace, enrol.GATEWAY_CA_SECRET)
    if ca is None:
        raise enrol.EnrolmentError(
            f"no Secret {enrol.GATEWAY_CA_SECRET} in {hub_namespace}: is the operator's site gateway on "
            "(hub chart siteGateway.enabled) and is --hub-namespace its namespace?"
        )
    ca_pem = base64.b64decode(ca["data"]["tls.crt"])
    token = enrol.new_token(site_name)
    expires = datetime.datetime.now(datetime.UTC) + ttl
    record = enrol.JoinRecord(enrol.token_hash(token), expires)
    name = enrol.join_secret_name(site_name.name)
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": site_name.namespace,
            "labels": {vocab.LABEL_NAME: "fedfleet", vocab.LABEL_SITE: site_name.name},
            "ownerReferences": [  # goes with the site
                {
                    "apiVersion": vocab.API_VERSION,
                    "kind": vocab.SITE,
                    "name": site_name.name,
                    "uid": site["metadata"]["uid"],
                }
            ],
        },
        "data": record.data(),
    }
    existing = await kube.get("Secret", site_name.namespace, name)
    if existing is None:
        await kube.create(secret)
    else:  # a new token replaces the old one and revokes the certificate it bought
        secret["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        await kube.request("PUT", path("Secret", site_name.namespace, name), secret)
    return str(token), expires, ca_pem


async def _join_token(args: argparse.Namespace) -> int:
    ttl = datetime.timedelta(minutes=args.ttl_minutes)
    token, expires, ca_pem = await issue_join_token(
        Kube(), enrol.SiteName(args.namespace, args.name), args.hub_namespace, ttl
    )
    if args.ca_out is not None:
        args.ca_out.write_bytes(ca_pem)
    print(f"token: {token}")
    print(f"expires: {expires.isoformat(timespec='seconds')}")
    print(f"hub CA fingerprint (sha256): {enrol.fingerprint(ca_pem)}")
    if args.ca_out is not None:
        print(f"hub CA certificate: {args.ca_out}")
    return 0


def site_agent(args: argparse.Namespace) -> int:
    from fedfleet.sites.agent import AgentError, SiteAgent
    from fedfleet.sites.policy import ConfigError, load_config

    try:
        config = load_config(args.config)
        asyncio.run(SiteAgent(config, Kube()).run())
    except (ConfigError, AgentError) as err:
        print(f"fedfleet: site-agent: {err}", file=sys.stderr)
        return 2
    return 0
