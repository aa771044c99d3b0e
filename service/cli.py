"""The `gmai-vl` command line.

`serve`, `gateway`, `worker`, `keys` (service.security.cli) and `read`
(service.reads.client) live here; the settings flags come from `Settings`
(`service.settings_cli`). The other command
groups (`model`, `data`, `train`, `eval`) are contributed by the `training`
package through the `gmai_vl.commands` entry point group, so `service` never
imports `training`.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

from service import errors
from service.config import Settings
from service.dicom_node.cli import add_dicom_node_flags, add_dicom_port_flag, apply_dicom_port
from service.dicom_node.rules import RulesError
from service.engines.checkpoint import UnservableCheckpoint
from service.reads.client import add_read_command
from service.security.cli import add_keys_commands
from service.security.keystore import AuthConfigError
from service.settings_cli import add_settings_flags, settings_from

log = logging.getLogger("gmaivl.cli")


SERVER = ["host", "port", "api_keys_file", "auth", "log_level"]
MODEL = ["model", "served_model_name"]
ENGINE = ["engine", "device", "max_concurrency", "lora"]
VLLM = [
    "vllm.dtype",
    "vllm.max_model_len",
    "vllm.tensor_parallel_size",
    "vllm.gpu_memory_utilization",
    "vllm.kv_cache_memory_bytes",
    "vllm.enforce_eager",
]
UPSTREAM = ["upstream_url", "upstream_model"]
# The gateway side: request limits, keys, audit, study reads.
REQUESTS = [
    "request_timeout",
    "max_request_timeout",
    "default_priority",
    "max_tokens_default",
    "max_tokens_limit",
    "max_body_bytes",
    "body_timeout",
    "max_json_depth",
    "max_messages",
    "max_text_chars",
    "api_keys_reload_interval",
    "max_tenant_labels",
    "audit_log",
]
READS = ["pacs_file", "read_ttl", "read_lease", "model_version"]
WEBHOOKS = ["webhook_max_attempts", "webhook_backoff"]
RESPONSES = ["store_responses", "response_ttl", "max_stored_responses", "response_lease"]
# The queue: a gateway admits (depth), judges workers live (heartbeat) and writes
# per-request keys (TTL); a worker also ages lanes, reclaims and dead-letters.
QUEUE_GATEWAY = ["queue_max_depth", "heartbeat_interval", "result_ttl"]
QUEUE_WORKER = [
    "aging_seconds",
    "visibility_timeout",
    "heartbeat_interval",
    "max_deliveries",
    "result_ttl",
    "event_flush_interval",
]
QUEUE = [
    *QUEUE_GATEWAY,
    "aging_seconds",
    "visibility_timeout",
    "max_deliveries",
    "event_flush_interval",
]
DEMO = ["cache_dir", "demo_recipe", "fake_token_interval"]
# Set only in the environment (or a file): secrets never on a command line, where
# `ps` shows them; nested groups and PACS entries are JSON (docs/settings.md). The DICOM
# node's group is configured where it is deployed (a few of its settings are also
# flags of `dicom-node`; `--dicom-port` of `serve` and `dicom-node` sets its port).
ENV_ONLY = ["upstream_api_key", "webhook_secret", "images", "fetch", "pacs", "oidc", "dicom"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gmai-vl", description="Train and serve GMAI-VL.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="serve a checkpoint: gateway + queue + one worker, in one process"
    )
    add_settings_flags(serve, [*MODEL, *SERVER, "redis_url", *DEMO])
    _gateway_flags(serve, QUEUE)
    add_dicom_port_flag(serve, "also run the DICOM node on this port (GMAIVL_DICOM_PORT; off)")
    _engine_flags(serve)
    serve.set_defaults(func=run_serve)

    gateway = sub.add_parser("gateway", help="the HTTP gateway alone; workers meet it in Redis")
    add_settings_flags(
        gateway,
        ["redis_url", "served_model_name", *SERVER],
        required=("redis_url",),
    )
    _gateway_flags(gateway, QUEUE_GATEWAY)
    gateway.set_defaults(func=run_gateway)

    worker = sub.add_parser("worker", help="one engine taking jobs from Redis")
    add_settings_flags(worker, ["redis_url", *MODEL, "metrics_port", "drain_grace", "host", *DEMO],
                       required=("redis_url",))  # fmt: skip
    queue = worker.add_argument_group("queue")
    add_settings_flags(queue, QUEUE_WORKER, flags_of=worker)
    _engine_flags(worker)
    worker.set_defaults(func=run_worker)

    node = sub.add_parser(
        "dicom-node",
        help="a DICOM node: receive studies by C-STORE, read them by rules, send SRs back",
        description="The DICOM node in Redis mode, beside gateways and workers (docs/pacs.md): "
        "a gateway with the node on, its HTTP port answering /health, /metrics and reads.",
    )
    add_settings_flags(node, ["redis_url", "served_model_name", *SERVER])
    _gateway_flags(node, QUEUE_GATEWAY)
    add_dicom_node_flags(node)

    add_keys_commands(sub)
    add_read_command(sub)
    for command in entry_points(group="gmai_vl.commands"):
        command.load()(sub)
    return parser


def _version() -> str:
    """The installed distribution's version (what an image was built from)."""
    try:
        return version("gmai-vl")
    except PackageNotFoundError:  # a source tree run without an install
        return "unknown"


def _gateway_flags(parser: argparse.ArgumentParser, queue_settings: list[str]) -> None:
    groups = (
        ("requests", REQUESTS),
        ("stored responses (/v1/responses)", RESPONSES),
        ("study reads", READS + WEBHOOKS),
        ("queue", queue_settings),
    )
    for title, names in groups:
        add_settings_flags(parser.add_argument_group(title), names, flags_of=parser)


def _engine_flags(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, ENGINE)
    vllm = parser.add_argument_group("vllm engine (vLLM's own argument names)")
    add_settings_flags(vllm, VLLM, flags_of=parser)
    upstream = parser.add_argument_group("openai engine")
    add_settings_flags(upstream, UPSTREAM, flags_of=parser)


def run_gateway(args: argparse.Namespace) -> int:
    from service.gateway import serve_gateway

    serve_gateway(settings_from(args))
    return 0


def run_worker(args: argparse.Namespace) -> int:
    import asyncio

    from service.worker_process import run_worker_process

    settings = _with_demo_model(settings_from(args))
    try:
        # uvloop where installed (uvicorn[standard] brings it), as the gateway runs:
        # the worker's per-token work is socket writes to Redis and task wake-ups.
        try:
            import uvloop
        except ImportError:  # pragma: no cover - e.g. Windows
            asyncio.run(run_worker_process(settings))
        else:
            uvloop.run(run_worker_process(settings))
    except errors.NotReady as exc:  # e.g. the KV cache cannot fit: the message says why
        log.error("worker cannot start: %s", exc)
        return 1
    return 0


def _with_demo_model(settings: Settings) -> Settings:
    if settings.model is None and settings.engine not in ("fake", "openai"):
        settings.model = ensure_demo_model(settings.cache_dir, settings.demo_recipe)
        settings.served_model_name = settings.served_model_name or "gmai-vl-demo"
    return settings


def run_serve(args: argparse.Namespace) -> int:
    settings = _with_demo_model(apply_dicom_port(args, settings_from(args)))
    from service.embedded import serve

    serve(settings)
    return 0


def ensure_demo_model(cache_dir: Path, recipe: str = "demo") -> Path:
    """The trained demo checkpoint under the user cache, built on first use.

    `gmai-vl data demo` writes the procedural corpus and `gmai-vl train --preset`
    trains on it (minutes on 2 cores), each in a child process: the training code
    stays out of this process, and its memory is returned when it exits. Both
    resume, so an interrupted first run continues where it stopped.
    """
    data = cache_dir / f"demo-data-{recipe}"
    out = cache_dir / f"demo-{recipe}"
    final = out / "final"
    if not (final / "config.json").exists():
        cli = [sys.executable, "-m", "service.cli"]
        if not (data / "example_list.json").exists():
            log.info("no demo corpus at %s: writing it (gmai-vl data demo)", data)
            subprocess.run([*cli, "data", "demo", "--preset", recipe, "--out", str(data)],
                           check=True)  # fmt: skip
        log.info("no demo model at %s: training it (gmai-vl train --preset %s)", final, recipe)
        subprocess.run(
            [*cli, "train", "--preset", recipe, "--data", str(data), "--out", str(out)], check=True
        )
    log.info("serving the demo model trained on the procedural corpus: %s", final)
    return final


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (AuthConfigError, UnservableCheckpoint, RulesError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
