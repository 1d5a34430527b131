"""The `fedfleet` command: local runs, and the aggregator, client and operator processes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fedfleet import __version__, logs
from fedfleet.api.load import ManifestError, load_training
from fedfleet.identity.files import TlsConfigError
from fedfleet.local.lifeline import follow_lifeline
from fedfleet.memory import reuse_message_buffers


def _add_log_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format", choices=["json", "console"], help="default: console on a TTY, else JSON"
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR")


def _add_tls_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", help="PEM certificate chain (mTLS; a Secret's tls.crt)")
    parser.add_argument("--tls-key", help="PEM private key (tls.key)")
    parser.add_argument("--tls-ca", help="PEM root the peer's certificate must chain to (ca.crt)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fedfleet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="run a federation on this machine, no cluster")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    run = local_commands.add_parser("run", help="train the federation a FederatedTraining manifest describes")
    run.add_argument("manifest", type=Path)
    run.add_argument("--out", type=Path, default=None, help="output directory (default: out/<training name>)")
    run.add_argument("--port", type=int, default=0, help="aggregator port (default: a free one)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--force", action="store_true", help="continue checkpoints in --out that another spec made"
    )
    _add_log_args(run)

    plan = commands.add_parser(
        "plan", help="check a manifest and forecast it (DP budget, bytes per round) before running it"
    )
    plan.add_argument("manifest", type=Path)
    plan.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="also check the sites on this cluster (claims, GPUs, RBAC)",
    )
    _add_log_args(plan)

    agg = commands.add_parser("aggregator", help="serve one training's rounds over gRPC")
    agg.add_argument("--manifest", type=Path, required=True)
    agg.add_argument("--host", default="0.0.0.0")
    agg.add_argument("--port", type=int, default=50051)
    agg.add_argument("--state-dir", type=Path, required=True, help="checkpoints live here; resumed on start")
    agg.add_argument("--chunk-bytes", type=int, default=2 * 1024 * 1024)
    agg.add_argument(
        "--staging-slots", type=int, default=1, help="uploads received at once (memory: slots x model)"
    )
    _add_tls_args(agg)
    agg.add_argument(
        "--insecure-local", action="store_true", help="plaintext, loopback --host only (fedfleet local run)"
    )
    agg.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics; 0: none")
    agg.add_argument(
        "--lineage-key",
        type=Path,
        default=None,
        help="PEM Ed25519 key that signs lineage records; none: unsigned",
    )
    _add_log_args(agg)

    client = commands.add_parser("client", help="train for one site against an aggregator")
    client.add_argument("--manifest", type=Path, required=True)
    client.add_argument("--aggregator", required=True, help="host:port")
    client.add_argument("--site", required=True)
    client.add_argument("--client-id", required=True)
    client.add_argument("--partition", type=int, default=0)
    client.add_argument("--num-partitions", type=int, default=1)
    client.add_argument("--data-dir", type=Path, default=None)
    client.add_argument("--device", default="", help="torch device; default: cuda when present, else cpu")
    client.add_argument(
        "--connect-timeout", type=float, default=120.0, help="seconds of retries before giving up"
    )
    client.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    _add_tls_args(client)
    client.add_argument("--tls-server-name", default="", help="name the aggregator's certificate must carry")
    client.add_argument(
        "--allowed-base-digest",
        action="append",
        default=[],
        help="base model digest this site's policy allows (repeatable); none given: any",
    )
    _add_log_args(client)

    lineage = commands.add_parser("lineage", help="check and export a training's signed model lineage")
    lineage_commands = lineage.add_subparsers(dest="lineage_command", required=True)
    verify = lineage_commands.add_parser(
        "verify", help="check the chain, signatures and model files; print it"
    )
    export = lineage_commands.add_parser("export", help="write an in-toto statement and a model card")
    for sub in (verify, export):
        sub.add_argument("state_dir", type=Path, help="the aggregator's state directory (holds rounds/)")
        sub.add_argument(
            "--public-key",
            default=None,
            help="PEM (or a file) every record must be signed with: status.lineagePublicKey",
        )
        sub.add_argument("--require-signature", action="store_true", help="unsigned records are an error")
        sub.add_argument(
            "--head", default="", help="the published lineage head (status.lineageHead) it must end at"
        )
        _add_log_args(sub)
    export.add_argument(
        "--out", type=Path, required=True, help="directory for the statement and the model card"
    )

    model = commands.add_parser("model", help="release a trained model to a registry, or pull and verify one")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    release = model_commands.add_parser("release", help="push STATE_DIR's final model with its attestation")
    release.add_argument("state_dir", type=Path, help="the aggregator's state directory (holds rounds/)")
    release.add_argument("--to", required=True, help="registry/repository:tag")
    release.add_argument("--key", type=Path, required=True, help="the lineage signing key (PEM, Ed25519)")
    release.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="the training's manifest: the release carries its task's files (a LoRA adapter_config.json)",
    )
    pull = model_commands.add_parser("pull", help="fetch a released model; --verify checks it first")
    pull.add_argument("reference", help="registry/repository:tag (or @sha256:...)")
    pull.add_argument("--out", type=Path, required=True, help="directory for the model and its lineage")
    pull.add_argument("--verify", action="store_true", help="check signature, lineage and digest")
    pull.add_argument(
        "--public-key", default=None, help="the key the release must be signed with (PEM or file)"
    )
    for sub in (release, pull):
        sub.add_argument(
            "--insecure", action="store_true", help="plain HTTP to the registry (loopback, tests)"
        )
        _add_log_args(sub)

    op = commands.add_parser("operator", help="run the Kubernetes operator (kopf)")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", action="store_true", help="watch the whole cluster (default)")
    op.add_argument("--standalone", action="store_true", help="no peering: for a single replica")
    op.add_argument("--peering", default="fedfleet", help="kopf peering name for leader election")
    op.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="health endpoint; empty: none")
    op.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics; 0: none")
    _add_log_args(op)
    from fedfleet.sites.commands import add_parsers

    add_parsers(commands)
    return parser


def _local_run(args: argparse.Namespace) -> int:
    from fedfleet.local.report import print_table, write_metrics, write_plot
    from fedfleet.local.runner import LocalRunError, LocalRunner, LocalRunStopped
    from fedfleet.plan.checks import preflight

    training = load_training(args.manifest)
    if not training.spec.sites.names:
        raise ManifestError(
            f"{args.manifest}: spec.sites: a local run needs site names (label selectors need a cluster)"
        )
    from fedfleet.local.failures import last_fatal_error
    from fedfleet.local.state_guard import StateMismatch, check_state

    preflight(training, args.manifest, with_traffic=False).raise_errors()  # `fedfleet plan`'s checks
    out_dir = args.out or Path("out") / training.metadata.name
    try:
        resume = check_state(out_dir, training, args.force)
    except StateMismatch as err:
        print(f"fedfleet: {err}", file=sys.stderr)
        return 2
    if resume.completed_rounds:
        print(f"fedfleet: {resume.message()} ({out_dir / 'state'})", file=sys.stderr)
    try:
        runner = LocalRunner(
            training,
            args.manifest,
            out_dir,
            port=args.port,
            show_progress=not args.no_progress and sys.stderr.isatty(),
        )
        result = asyncio.run(runner.run())
    except LocalRunStopped as stopped:
        print(f"fedfleet: {stopped}; its processes are stopped; run it again to resume", file=sys.stderr)
        return 128 + stopped.signum
    except LocalRunError as err:
        logs_dir = out_dir / "logs"  # named only when the run got as far as writing them
        where = f" (logs: {logs_dir})" if logs_dir.is_dir() else ""
        cause = last_fatal_error(logs_dir)  # what made the processes fail, not only that they did
        reason = f"{err}; {cause}" if cause and cause not in str(err) else str(err)
        print(f"fedfleet: training failed: {reason}{where}", file=sys.stderr)
        return 1
    print_table(result)
    metrics, plot = write_metrics(result, out_dir), write_plot(result, out_dir)
    print(f"final model {result.model_digest} in {out_dir / 'state'}; metrics: {metrics}; plot: {plot}")
    if (release := training.spec.release.oci) is not None:
        from fedfleet.tasks.base import load_task

        extra = load_task(training.spec.task, training.spec.model).release_files()
        return _release_local(out_dir, release.reference, release.insecure, extra)
    return 0


def _release_local(out_dir: Path, reference: str, insecure: bool, extra: dict[str, bytes]) -> int:
    """spec.release: push the run's final model, signed with the run's lineage key."""
    import tempfile

    from fedfleet.local.runner import LINEAGE_KEY_FILE
    from fedfleet.provenance.signing import load_signing_key
    from fedfleet.release import oci
    from fedfleet.release.bundle import build_bundle
    from fedfleet.release.dsse import ReleaseError

    try:
        with tempfile.TemporaryDirectory() as work:
            key = load_signing_key(out_dir / LINEAGE_KEY_FILE)
            bundle = build_bundle(out_dir / "state", key, Path(work), extra)
            digest = oci.push(reference, bundle, insecure)
    except (ReleaseError, OSError) as err:
        print(f"fedfleet: training succeeded, release to {reference} failed: {err}", file=sys.stderr)
        return 1
    print(f"released {bundle.model_digest} to {oci.repository(reference)}@{digest}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from fedfleet.plan.checks import preflight
    from fedfleet.plan.render import render

    training = load_training(args.manifest)
    plan = preflight(training, args.manifest)
    if args.kubeconfig is not None:
        from fedfleet.plan.sites import check_sites

        check_sites(plan, args.kubeconfig)
    print(render(plan), file=sys.stdout if plan.ok else sys.stderr)
    return 0 if plan.ok else 2


def _aggregator(args: argparse.Namespace) -> int:
    from fedfleet.aggregator.app import run_aggregator
    from fedfleet.provenance.signing import LineageKeyError, load_signing_key

    try:
        key = load_signing_key(args.lineage_key) if args.lineage_key else None
    except LineageKeyError as err:
        print(f"fedfleet: --lineage-key: {err}", file=sys.stderr)
        return 2
    from fedfleet.identity.files import tls_files

    training = load_training(args.manifest)
    asyncio.run(
        run_aggregator(
            training,
            f"{args.host}:{args.port}",
            args.state_dir,
            args.chunk_bytes,
            args.staging_slots,
            tls=tls_files(args.tls_cert, args.tls_key, args.tls_ca),
            insecure_local=args.insecure_local,
            metrics_port=args.metrics_port,
            lineage_key=key,
        )
    )
    return 0


def _client(args: argparse.Namespace) -> int:
    from fedfleet.identity.files import tls_files
    from fedfleet.provenance.policy import (
        REFUSED_EXIT_CODE,
        PolicyRefusal,
        check_base_model,
        write_termination_message,
    )

    training = load_training(args.manifest)
    log = logs.get_logger(component="client", client=args.client_id, site=args.site)
    try:
        check_base_model(training.spec, args.allowed_base_digest)
    except PolicyRefusal as refusal:  # before torch, data or the network: nothing to retry
        log.error("client.policy_refused", reason=str(refusal))
        write_termination_message(str(refusal))
        return REFUSED_EXIT_CODE
    from fedfleet.client.app import ClientOptions, SiteClient  # torch: only once the site agrees
    from fedfleet.tasks.base import TaskError

    options = ClientOptions(
        args.aggregator,
        args.site,
        args.client_id,
        args.partition,
        args.num_partitions,
        args.data_dir,
        args.device,
        args.connect_timeout,
        args.threads,
        tls_files(args.tls_cert, args.tls_key, args.tls_ca),
        args.tls_server_name,
    )
    try:
        client = SiteClient(training, options)
    except TaskError as err:  # this site cannot run the task as configured (data, base model pin)
        log.error("client.task_refused", reason=str(err))
        write_termination_message(str(err))
        print(f"fedfleet: {err}", file=sys.stderr)
        return REFUSED_EXIT_CODE
    return client.run()


def _lineage(args: argparse.Namespace) -> int:
    from fedfleet.provenance.export import write_export
    from fedfleet.provenance.history import render
    from fedfleet.provenance.signing import LineageKeyError, load_public_key
    from fedfleet.provenance.verify import verify_state

    try:
        key = load_public_key(args.public_key) if args.public_key else None
    except LineageKeyError as err:
        print(f"fedfleet: --public-key: {err}", file=sys.stderr)
        return 2
    result = verify_state(args.state_dir, key, args.require_signature, args.head)
    if args.lineage_command == "verify" or not result.ok:
        print(render(result), file=sys.stdout if result.ok else sys.stderr)
        if not result.ok and args.lineage_command == "export":
            print("fedfleet: the lineage does not verify; nothing exported", file=sys.stderr)
        return 0 if result.ok else 1
    statement, card = write_export(result, args.out)
    print(f"in-toto statement: {statement}\nmodel card: {card}")
    return 0


def _model(args: argparse.Namespace) -> int:
    from fedfleet.provenance.policy import write_termination_message
    from fedfleet.provenance.signing import LineageKeyError, load_public_key
    from fedfleet.release import oci
    from fedfleet.release.dsse import ReleaseError
    from fedfleet.release.verify import verify_release

    try:
        if args.model_command == "release":
            return _model_release(args)
        pinned = load_public_key(args.public_key) if args.public_key else None
        pulled = oci.pull(args.reference, args.out, args.insecure)
        if args.verify:
            checked = verify_release(pulled, pinned)
            print(
                f"verified {checked.model_digest}: signed by {checked.key_fingerprint}, "
                f"lineage head {checked.lineage_head} ({checked.rounds} rounds)"
            )
        print(f"pulled {oci.repository(args.reference)}@{pulled.manifest_digest} into {args.out}")
        return 0
    except (ReleaseError, LineageKeyError) as err:
        if args.model_command == "pull" and args.verify:  # never leave an unverified model behind
            for path in pulled_files(args.out):
                path.unlink(missing_ok=True)
        if args.model_command == "release":  # the operator's release pod: the reason reaches status
            write_termination_message(str(err))
        print(f"fedfleet: {err}", file=sys.stderr)
        return 1


def _model_release(args: argparse.Namespace) -> int:
    """Push STATE_DIR's final model; the termination message (what the operator reads from its
    release pod) is the pushed manifest digest, model digest and lineage head as JSON."""
    import json
    import tempfile

    from fedfleet.provenance.policy import write_termination_message
    from fedfleet.provenance.signing import load_signing_key
    from fedfleet.release import oci
    from fedfleet.release.bundle import build_bundle

    extra: dict[str, bytes] = {}
    if args.manifest is not None:
        from fedfleet.tasks.base import load_task

        training = load_training(args.manifest)
        extra = load_task(training.spec.task, training.spec.model).release_files()
    key = load_signing_key(args.key)
    with tempfile.TemporaryDirectory() as work:
        bundle = build_bundle(args.state_dir, key, Path(work), extra)
        digest = oci.push(args.to, bundle, args.insecure)
    write_termination_message(
        json.dumps({"digest": digest, "modelDigest": bundle.model_digest, "lineageHead": bundle.lineage_head})
    )
    print(f"released {bundle.model_digest} to {oci.repository(args.to)}@{digest} (attestation signed)")
    return 0


def pulled_files(out: Path) -> list[Path]:
    from fedfleet.release.oci import MEDIA_TYPES

    return [out / name for name in MEDIA_TYPES]


def _operator(args: argparse.Namespace) -> int:
    from fedfleet.controller.app import run_operator

    if args.log_level:
        os.environ["FEDFLEET_LOG_LEVEL"] = args.log_level
    if args.log_format:  # kopf's own log lines follow it too (controller/app.py)
        os.environ["FEDFLEET_LOG_FORMAT"] = args.log_format

    asyncio.run(run_operator(args.namespace, args.standalone, args.peering, args.liveness, args.metrics_port))
    return 0


def _site(args: argparse.Namespace) -> int:
    from fedfleet.sites.commands import join_token

    return join_token(args)


def _site_agent(args: argparse.Namespace) -> int:
    from fedfleet.sites.commands import site_agent

    return site_agent(args)


def main(argv: Sequence[str] | None = None) -> int:
    reuse_message_buffers()  # process-wide, so before the first thread (the lifeline's) allocates
    args = build_parser().parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    follow_lifeline()  # a process `fedfleet local run` started stops once the run is gone
    handlers = {
        "local": _local_run,
        "plan": _plan,
        "aggregator": _aggregator,
        "client": _client,
        "lineage": _lineage,
        "model": _model,
        "operator": _operator,
        "site": _site,
        "site-agent": _site_agent,
    }
    try:
        return handlers[args.command](args)
    except ManifestError as err:
        print(f"fedfleet: invalid manifest: {err}", file=sys.stderr)
        return 2
    except TlsConfigError as err:
        print(f"fedfleet: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
