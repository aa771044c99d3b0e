"""`gmai-vl dicom-node`: run the node (Redis mode), or, with `--dry-run`, say which
rule a study (DICOM files or folders) would match; `--trigger UID` marks a study
in the spool complete now.

The node process is the gateway's app (`service.gateway`) over the Redis queue with
the node on: its HTTP port answers /health, /metrics and the reads it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.config import Settings
from service.settings_cli import add_settings_flags, settings_from

NODE = ["dicom.ae_title", "dicom.rules_file", "dicom.spool_dir"]
DEFAULT_PORT = 11112


def add_dicom_port_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, help: str
) -> None:
    """`--dicom-port` (the setting's leaf name, `port`, is the HTTP port's flag)."""
    parser.add_argument("--dicom-port", type=int, default=None, help=help)


def apply_dicom_port(args: argparse.Namespace, settings: Settings) -> Settings:
    if args.dicom_port is not None:
        settings.dicom.port = args.dicom_port
    return settings


def add_dicom_node_flags(parser: argparse.ArgumentParser) -> None:
    """The node's own flags on `gmai-vl dicom-node` (the gateway's are added by
    service.cli: the node process is a gateway with the node on)."""
    node = parser.add_argument_group("DICOM node (other settings: GMAIVL_DICOM_*)")
    add_settings_flags(node, NODE, flags_of=parser)
    add_dicom_port_flag(node, f"DIMSE port (GMAIVL_DICOM_PORT; default {DEFAULT_PORT})")
    node.add_argument(
        "--dry-run",
        nargs="+",
        metavar="PATH",
        help="print the rule a study made of these DICOM files (or folders) would match",
    )
    node.add_argument("--calling-ae", default="", help="--dry-run: the sender's AE title")
    node.add_argument("--trigger", metavar="STUDY_UID", help="mark a spooled study complete")
    parser.set_defaults(func=run_dicom_node_command)


def run_dicom_node_command(args: argparse.Namespace) -> int:
    from service.dicom_node.rules import RulesError, load_rules

    settings = apply_dicom_port(args, settings_from(args))
    dicom = settings.dicom
    if args.trigger:
        from service.dicom_node.spool import Spool

        Spool(dicom.spool_dir, dicom.spool_max_bytes, dicom.study_quiet_seconds).trigger(
            args.trigger
        )
        print("triggered")
        return 0
    try:
        rules = load_rules(dicom.rules_file)
    except RulesError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(rules, [Path(p) for p in args.dry_run], args.calling_ae)
    if settings.redis_url is None:
        print("dicom-node needs --redis-url (or use `gmai-vl serve --dicom-port`)", file=sys.stderr)
        return 2
    if dicom.port is None:
        dicom.port = DEFAULT_PORT
    from service.gateway import serve_gateway

    serve_gateway(settings, "gmai-vl-dicom-node")  # the gateway's app, the node on
    return 0


def dry_run(rules, paths: list[Path], calling_ae: str) -> int:  # type: ignore[no-untyped-def]
    from service.dicom_node.facts import study_facts
    from service.dicom_node.rules import decide

    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p])]
    files = [f for f in files if f.is_file()]
    facts = study_facts("", [calling_ae] if calling_ae else [], files)
    if not facts.instances:
        print("no DICOM instances found", file=sys.stderr)
        return 2
    print(decide(rules, facts).describe())
    return 0
