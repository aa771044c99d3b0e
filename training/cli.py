"""`gmai-vl model ...` subcommands, contributed to the `gmai-vl` CLI by entry point."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("gmaivl.training")


def add_model_commands(subparsers: argparse._SubParsersAction) -> None:
    from training.model.presets import PRESETS

    model = subparsers.add_parser("model", help="assemble and inspect model checkpoints")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    init = model_sub.add_parser(
        "init",
        help="assemble an untrained LLaVA checkpoint (CLIP + projector + Llama) from a preset",
    )
    init.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    init.add_argument("--out", type=Path, required=True, help="output directory")
    init.add_argument("--seed", type=int, default=0, help="weights are a function of the seed")
    init.set_defaults(func=run_model_init)


def run_model_init(args: argparse.Namespace) -> int:
    from training.model import PRESETS, assemble_checkpoint

    out = assemble_checkpoint(PRESETS[args.preset], args.out, seed=args.seed)
    log.info("assembled untrained %s checkpoint at %s (seed %d)", args.preset, out, args.seed)
    return 0
