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
    from training.model.assemble import assemble_checkpoint
    from training.model.presets import PRESETS

    out = assemble_checkpoint(PRESETS[args.preset], args.out, seed=args.seed)
    log.info("assembled untrained %s checkpoint at %s (seed %d)", args.preset, out, args.seed)
    return 0


def add_eval_commands(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "eval",
        help="evaluate an OpenAI-compatible endpoint on a medical VQA benchmark",
        description="gmai-vl eval --benchmark FILE --base-url URL --model NAME | "
        "gmai-vl eval compare A.json B.json",
    )
    ev.add_argument(
        "compare",
        nargs="*",
        metavar="compare A.json B.json",
        help="compare two results.json files instead of running",
    )
    ev.add_argument("--benchmark", type=Path, help="VLMEvalKit .tsv or VQA-RAD/SLAKE/PathVQA .json")
    ev.add_argument("--base-url", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    ev.add_argument("--model", help="model id to request")
    ev.add_argument("--api-key", default=None, help="bearer key (default: $OPENAI_API_KEY)")
    ev.add_argument("--out", type=Path, default=Path("runs/eval"), help="output root")
    ev.add_argument("--image-root", type=Path, help="where image files named in the benchmark are")
    ev.add_argument("--concurrency", type=int, default=8)
    ev.add_argument("--max-tokens", type=int, default=64)
    ev.add_argument("--retries", type=int, default=5)
    ev.add_argument("--limit", type=int, help="only the first N items (smoke runs)")
    ev.add_argument(
        "--breakdown",
        action="append",
        help="tag to break results down by (repeatable; default: all useful tags)",
    )
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=run_eval, parser=ev)


def run_eval(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import os

    from training.eval.datasets import BenchmarkFormatError, load_benchmark
    from training.eval.report import compare, markdown_table, write_results
    from training.eval.runner import EvalRunner, RunnerConfig
    from training.eval.scoring import score_item, summarize

    if args.compare:
        if len(args.compare) != 3 or args.compare[0] != "compare":
            args.parser.error("use: gmai-vl eval compare A.json B.json")
        a, b = (json.loads(Path(p).read_text()) for p in args.compare[1:])
        print(compare(a, b))
        return 0
    missing = [
        flag
        for flag, value in (
            ("--benchmark", args.benchmark),
            ("--base-url", args.base_url),
            ("--model", args.model),
        )
        if not value
    ]
    if missing:
        args.parser.error("missing " + ", ".join(missing))
    try:
        items = load_benchmark(args.benchmark, args.image_root)
    except (BenchmarkFormatError, OSError) as exc:
        args.parser.error(str(exc))
    items = items[: args.limit] if args.limit else items
    out_dir = args.out / args.benchmark.stem / args.model.replace("/", "_")
    config = RunnerConfig(
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY", "unused"),
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        retries=args.retries,
    )
    predictions = asyncio.run(
        EvalRunner(config).run(items, out_dir / "predictions.jsonl", not args.no_progress)
    )
    scores = {i.key: score_item(i, predictions[i.key].prediction) for i in items}
    results = {
        "benchmark": args.benchmark.stem,
        "model": args.model,
        "base_url": args.base_url,
        "errors": sum(1 for i in items if predictions[i.key].error),
        **summarize(items, scores, args.breakdown),
    }
    paths = write_results(results, out_dir)
    print(markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
