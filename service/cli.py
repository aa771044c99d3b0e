"""The `gmai-vl` command line.

`serve`, `gateway`, `worker` and `keys` (service.security.cli) live here; other
command groups (`model`, later `data`, `train`, `eval`) are contributed by the
`training` package through the `gmai_vl.commands` entry point group, so `service`
never imports `training`.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from service.config import Settings, VllmSettings
from service.security.cli import add_keys_commands
from service.security.keystore import AuthConfigError

log = logging.getLogger("gmaivl.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gmai-vl", description="Train and serve GMAI-VL.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="serve a checkpoint: gateway + queue + one worker, in one process"
    )
    _model_flags(serve)
    _server_flags(serve)
    _engine_flags(serve)
    serve.add_argument("--redis-url", help="queue in Redis instead of in process")
    serve.set_defaults(func=run_serve)

    gateway = sub.add_parser("gateway", help="the HTTP gateway alone; workers meet it in Redis")
    gateway.add_argument("--redis-url", required=True)
    gateway.add_argument("--served-model-name", required=True, help="model id it serves")
    _server_flags(gateway)
    gateway.set_defaults(func=run_gateway)

    worker = sub.add_parser("worker", help="one engine taking jobs from Redis")
    worker.add_argument("--redis-url", required=True)
    _model_flags(worker)
    _engine_flags(worker)
    worker.add_argument("--metrics-port", type=int, help="serve the worker's /metrics here")
    worker.add_argument("--drain-grace", type=float, help="seconds to finish jobs on SIGTERM")
    worker.set_defaults(func=run_worker)

    add_keys_commands(sub)
    for command in entry_points(group="gmai_vl.commands"):
        command.load()(sub)
    return parser


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="checkpoint dir (default: the demo model)")
    parser.add_argument("--served-model-name", help="model id for clients (default: dir name)")


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument(
        "--api-keys-file", type=Path, help="require API keys from this file (docs/security.md)"
    )
    parser.add_argument(
        "--auth",
        choices=["auto", "keys", "off"],
        help="auto (default): keys if a key file is given, off on loopback, else refuse",
    )


def _engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine", choices=["transformers", "vllm", "openai", "fake"], help="engine"
    )
    parser.add_argument("--device", help="torch device of the transformers engine (cpu, cuda)")
    parser.add_argument(
        "--max-concurrency", type=int, help="requests the engine runs at once (vllm: max_num_seqs)"
    )
    vllm = parser.add_argument_group("vllm engine (vLLM's own argument names)")
    vllm.add_argument("--dtype", help="auto | float16 | bfloat16 | float32")
    vllm.add_argument("--max-model-len", type=int)
    vllm.add_argument("--tensor-parallel-size", type=int)
    vllm.add_argument("--gpu-memory-utilization", type=float)
    vllm.add_argument("--kv-cache-memory-bytes", type=int, help="KV cache size (set it on CPU)")
    vllm.add_argument("--enforce-eager", action="store_true", default=None)
    upstream = parser.add_argument_group("openai engine")
    upstream.add_argument(
        "--upstream-url", help="OpenAI-compatible base URL, e.g. http://h:8000/v1"
    )
    upstream.add_argument("--upstream-model", help="model id upstream (default: served name)")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from GMAIVL_* variables, overridden by the flags that were given."""
    flags = (
        "model",
        "served_model_name",
        "host",
        "port",
        "engine",
        "device",
        "max_concurrency",
        "redis_url",
        "metrics_port",
        "drain_grace",
        "upstream_url",
        "upstream_model",
        "api_keys_file",
        "auth",
    )
    overrides = {f: getattr(args, f) for f in flags if getattr(args, f, None) is not None}
    vllm_flags = (
        "dtype",
        "max_model_len",
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "kv_cache_memory_bytes",
        "enforce_eager",
    )
    vllm = {f: getattr(args, f) for f in vllm_flags if getattr(args, f, None) is not None}
    if vllm:
        overrides["vllm"] = VllmSettings(**vllm)
    return Settings(**overrides)


def run_gateway(args: argparse.Namespace) -> int:
    from service.distributed import serve_gateway

    serve_gateway(settings_from(args))
    return 0


def run_worker(args: argparse.Namespace) -> int:
    import asyncio

    from service.distributed import run_worker as worker_main

    settings = _with_demo_model(settings_from(args))
    asyncio.run(worker_main(settings))
    return 0


def _with_demo_model(settings: Settings) -> Settings:
    if settings.model is None and settings.engine not in ("fake", "openai"):
        settings.model = ensure_demo_model(settings.cache_dir, settings.demo_recipe)
        settings.served_model_name = settings.served_model_name or "gmai-vl-demo"
    return settings


def run_serve(args: argparse.Namespace) -> int:
    settings = _with_demo_model(settings_from(args))
    from service.server import serve

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
    except AuthConfigError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
