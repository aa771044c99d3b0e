"""The `gmai-vl` command line.

`serve` lives here; other command groups (`model`, later `data`, `train`,
`eval`) are contributed by the `training` package through the
`gmai_vl.commands` entry point group, so `service` never imports `training`.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from service.config import Settings

log = logging.getLogger("gmaivl.cli")

DEMO_DIR_NAME = "demo-tiny"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gmai-vl", description="Train and serve GMAI-VL.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="serve a checkpoint: gateway + in-process queue + one worker, one process"
    )
    serve.add_argument("--model", type=Path, help="checkpoint dir (default: the demo model)")
    serve.add_argument("--served-model-name", help="model id for clients (default: dir name)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--engine", choices=["transformers", "fake"], help="engine")
    serve.add_argument("--device", help="torch device of the transformers engine (cpu, cuda)")
    serve.add_argument("--max-concurrency", type=int, help="requests the engine runs at once")
    serve.set_defaults(func=run_serve)

    for command in entry_points(group="gmai_vl.commands"):
        command.load()(sub)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    overrides = {
        key: value
        for key, value in {
            "model": args.model,
            "served_model_name": args.served_model_name,
            "host": args.host,
            "port": args.port,
            "engine": args.engine,
            "device": args.device,
            "max_concurrency": args.max_concurrency,
        }.items()
        if value is not None
    }
    settings = Settings(**overrides)
    if settings.model is None and settings.engine != "fake":
        settings.model = ensure_demo_model(settings.cache_dir)
        settings.served_model_name = settings.served_model_name or "gmai-vl-demo"
    from service.server import serve

    serve(settings)
    return 0


def ensure_demo_model(cache_dir: Path) -> Path:
    """The demo checkpoint under the user cache, created on first use.

    It is built by `gmai-vl model init` in a child process: the training code
    stays out of this process, and its memory is returned when it exits.
    """
    path = cache_dir / DEMO_DIR_NAME
    if not (path / "config.json").exists():
        log.info("no demo model at %s: assembling one (gmai-vl model init --preset tiny)", path)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "service.cli",
                "model",
                "init",
                "--preset",
                "tiny",
                "--out",
                str(path),
            ],
            check=True,
        )
    log.warning(
        "serving the demo model at %s: it is UNTRAINED (assembled, random weights); its "
        "answers are noise. Train or pass --model for a real checkpoint.",
        path,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
