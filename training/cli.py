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
        help="assemble a LLaVA checkpoint (CLIP + projector + LM): untrained from a preset, "
        "or from pretrained local parts (--vision-tower and --llm)",
    )
    init.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    init.add_argument("--vision-tower", type=Path, help="a local CLIP (vision) checkpoint")
    init.add_argument("--llm", type=Path, help="a local causal LM checkpoint with its tokenizer")
    init.add_argument("--out", type=Path, required=True, help="output directory")
    init.add_argument("--seed", type=int, default=0, help="weights are a function of the seed")
    init.set_defaults(func=run_model_init, parser=init)
    add_import_command(model_sub)


def add_import_command(model_sub: argparse._SubParsersAction) -> None:
    imp = model_sub.add_parser(
        "import",
        help="convert an xtuner / enhanced_llava (InternLM2) / original LLaVA checkpoint "
        "into the native LLaVA layout both engines serve, without remote code",
        description="gmai-vl model import SRC --out DST [--format auto|xtuner|enhanced-llava|"
        "llava] [--vision-tower DIR] [--llm DIR]; see docs/models.md",
    )
    imp.add_argument("src", type=Path, help="the source checkpoint directory")
    imp.add_argument("--out", type=Path, required=True, help="output directory (new or empty)")
    imp.add_argument(
        "--format",
        choices=["auto", "xtuner", "enhanced-llava", "llava"],
        default="auto",
        help="the source layout; auto detects it and says which it chose",
    )
    imp.add_argument(
        "--vision-tower",
        type=Path,
        help="a local CLIP checkpoint, when the source has no vision tower weights",
    )
    imp.add_argument(
        "--llm", type=Path, help="xtuner: the base LLM (for llm_adapter/ or a frozen LLM)"
    )
    imp.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        help="weights dtype (default: the source's)",
    )
    imp.add_argument(
        "--chat-template",
        metavar="NAME|FILE",
        help="internlm2-chatml, llava-v1, mistral-instruct or a Jinja file (default: the "
        "source's own template; the format's when the source has none that renders images)",
    )
    imp.add_argument("--shard-size-gb", type=float, default=4.0, help="largest output shard")
    imp.add_argument("--no-progress", action="store_true")
    imp.set_defaults(func=run_model_import, parser=imp)


def run_model_import(args: argparse.Namespace) -> int:
    from training.model.import_.formats import ImportFormatError
    from training.model.import_.importer import ImportOptions, import_checkpoint

    options = ImportOptions(
        format=args.format,
        vision_tower=args.vision_tower,
        llm=args.llm,
        dtype=args.dtype,
        chat_template=args.chat_template,
        max_shard_bytes=int(args.shard_size_gb * (1 << 30)),
        progress=not args.no_progress,
    )
    try:
        plan = import_checkpoint(args.src, args.out, options)
    except ImportFormatError as exc:
        args.parser.error(str(exc))
    print(
        f"imported {args.src} as {plan.detected.format} ({plan.detected.reason}); "
        f"text model {plan.sources.llm_kind} -> {plan.config.text_config.model_type}, "
        f"chat template {plan.template.describe()}, dtype {plan.config.dtype}: {args.out}"
    )
    return 0


def run_model_init(args: argparse.Namespace) -> int:
    if bool(args.vision_tower) != bool(args.llm):
        args.parser.error("--vision-tower and --llm go together")
    if args.vision_tower:
        missing = [
            str(p) for p in (args.vision_tower, args.llm) if not (p / "config.json").is_file()
        ]
        if missing:
            args.parser.error("no Hugging Face checkpoint (config.json) at " + ", ".join(missing))
        from training.model.pretrained import assemble_from_pretrained

        out = assemble_from_pretrained(args.vision_tower, args.llm, args.out, seed=args.seed)
        log.info("assembled %s from %s and %s", out, args.vision_tower, args.llm)
        return 0
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


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    from training.demo_recipe import RECIPE_NAMES

    data = subparsers.add_parser("data", help="build training data from annotated datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    build = data_sub.add_parser(
        "build", help="convert the sources of a YAML/JSON config into sharded LLaVA JSONL"
    )
    build.add_argument("--config", type=Path, required=True, help="build config (YAML/JSON)")
    build.add_argument("--out", type=Path, required=True, help="output directory")
    build.add_argument("--workers", type=int, help="worker processes (overrides the config)")
    build.add_argument("--no-progress", action="store_true")
    build.set_defaults(func=run_data_build, parser=build)
    demo = data_sub.add_parser("demo", help="write the procedural demo corpus (train + held-out)")
    demo.add_argument("--out", type=Path, required=True)
    demo.add_argument(
        "--preset",
        choices=RECIPE_NAMES,
        default="demo",
        help="corpus size for the training recipe of the same name",
    )
    demo.add_argument("--train-per-modality", type=int, help="training studies per modality")
    demo.add_argument("--heldout-per-modality", type=int, help="held-out studies per modality")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=run_data_demo)


def run_data_build(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from training.data.build import build, load_build_config

    try:
        config = load_build_config(args.config)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        args.parser.error(f"{args.config}: {exc}")
    if args.workers:
        config = replace(config, workers=args.workers)
    manifest = build(config, args.out, progress=not args.no_progress)
    print(json.dumps({k: manifest[k] for k in ("records", "bad_files", "failed")}))
    if manifest["bad_files"]:
        log.warning(
            "%d source files skipped; see %s", manifest["bad_files"], args.out / "bad_files.jsonl"
        )
    return 1 if manifest["failed"] else 0


def run_data_demo(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from training.data.demo import make_demo
    from training.demo_recipe import RECIPES

    config = replace(RECIPES[args.preset].corpus, seed=args.seed)
    if args.train_per_modality:
        config = replace(config, train_per_modality=args.train_per_modality)
    if args.heldout_per_modality:
        config = replace(config, heldout_per_modality=args.heldout_per_modality)
    counts = make_demo(args.out, config, progress=not args.no_progress)
    print(json.dumps(counts))
    return 0


def add_train_commands(subparsers: argparse._SubParsersAction) -> None:
    from training.demo_recipe import RECIPE_NAMES

    train = subparsers.add_parser(
        "train",
        help="three-stage training (I projector, II +vision, III full) or the demo recipe",
        description="gmai-vl train --config FILE --stage 1|2|3|all --out DIR | "
        "gmai-vl train --preset demo --data D --out OUT",
    )
    train.add_argument("--config", type=Path, help="run config (YAML/JSON), see docs/training.md")
    train.add_argument("--stage", choices=["1", "2", "3", "all"], default="all")
    train.add_argument("--preset", choices=RECIPE_NAMES, help="a built-in recipe instead")
    train.add_argument("--data", type=Path, help="the demo corpus (`gmai-vl data demo`)")
    train.add_argument(
        "--stage-three-only",
        action="store_true",
        help="demo ablation: stage III alone on the same step budget",
    )
    train.add_argument("--seed", type=int, default=0, help="demo: weights, pretraining, data order")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=run_train, parser=train)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    if bool(args.config) == bool(args.preset):
        args.parser.error("give either --config FILE or --preset NAME")
    if args.preset:
        if not args.data:
            args.parser.error("--preset needs --data (the corpus `gmai-vl data demo` wrote)")
        from training.train.demo import run_demo

        run_demo(
            args.data, args.out, args.preset, args.stage_three_only, not args.no_progress, args.seed
        )
        return 0
    from training.train.config import load_train_config

    try:
        config = load_train_config(args.config)
    except (OSError, ValueError, TypeError) as exc:
        args.parser.error(f"{args.config}: {exc}")
    config = replace(config, progress=not args.no_progress)
    from training.train.stages import finish_run, run_stages

    stages = [1, 2, 3] if args.stage == "all" else [int(args.stage)]
    last = run_stages(config, stages, args.out)
    if max(stages) == max(config.stages):
        last = finish_run(args.out, last, {}, f"GMAI-VL training ({args.config.name})")
    log.info("stage %s done: %s", args.stage, last)
    return 0
