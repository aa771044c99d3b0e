"""`gmai-vl train --preset demo`: runs the demo recipe, a miniature of the real one.

    OUT/init/         the assembled model (`gmai-vl model init` with the preset's shape)
    OUT/pretrained/   after component pretraining (LM on corpus text, vision CLIP-style)
    OUT/stage{1,2,3}/ the three stages (Trainer checkpoints, log, export)
    OUT/final/        the served checkpoint, with loss.png and the held-out scores
    OUT/heldout.json  every held-out answer; OUT/timing.json wall and CPU time per phase

The recipe itself (corpus sizes, pretraining, stages, and why its learning rates are
not the paper's) is training/demo_recipe.py.
Every phase resumes: a finished phase is skipped when the command is run again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from training.demo_recipe import RECIPES, DemoRecipe
from training.model.assemble import assemble_checkpoint
from training.model.presets import PRESETS
from training.train.config import TrainConfig
from training.train.dataset import load_examples
from training.train.export import export_checkpoint, read_metadata
from training.train.heldout import evaluate_heldout, format_summary, write_scores
from training.train.pretrain import pretrain_language_model, pretrain_vision_encoder
from training.train.stages import finish_run, run_stages

log = logging.getLogger("gmaivl.train")


class PhaseClock:
    """Wall and CPU time per phase (CPU time is the fairer figure on a shared machine)."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}

    def run(self, name: str, fn, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        self.phases[name] = {
            "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(time.process_time() - cpu, 1),
        }
        return result

    def total(self) -> dict[str, float]:
        return {k: round(sum(p[k] for p in self.phases.values()), 1) for k in ("wall_s", "cpu_s")}


def pretrain_components(
    recipe: DemoRecipe, init: Path, data: Path, out: Path, progress: bool
) -> dict[str, list[tuple[int, float]]]:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    curves_file = out / "pretrain_log.json"
    if (out / "config.json").is_file():
        return json.loads(curves_file.read_text())
    torch.manual_seed(recipe.lm.seed)
    processor = AutoProcessor.from_pretrained(init)
    model = LlavaForConditionalGeneration.from_pretrained(init, dtype=torch.float32)
    examples = load_examples(data)
    curves = {
        "pretrain LM (text)": pretrain_language_model(
            model, processor, examples, recipe.lm, progress
        ),
        "pretrain vision (CLIP-style)": pretrain_vision_encoder(
            model, processor, examples, recipe.vision, progress
        ),
    }
    metadata = {**read_metadata(init), "stage": "pretrained components", "trained": True}
    export_checkpoint(model.eval(), processor, out, metadata)
    curves_file.write_text(json.dumps(curves))
    return curves


def run_demo(
    data: Path,
    out: Path,
    recipe_name: str = "demo",
    stage_three_only: bool = False,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """The whole demo; returns held-out accuracy per question type."""
    recipe = RECIPES[recipe_name]
    recipe = recipe.stage_three_only() if stage_three_only else recipe
    recipe = replace(recipe, lm=replace(recipe.lm, seed=seed),
                     vision=replace(recipe.vision, seed=seed))  # fmt: skip
    mixture, heldout = data / "example_list.json", data / "heldout" / "annotations.json"
    for needed in (mixture, heldout):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing: run `gmai-vl data demo --out {data}`")
    torch.set_num_threads(recipe.threads)
    clock = PhaseClock()
    out.mkdir(parents=True, exist_ok=True)
    init = out / "init"
    if not (init / "config.json").is_file():
        clock.run("assemble", assemble_checkpoint, PRESETS[recipe.preset], init, seed)
    pretrained = out / "pretrained"
    curves = clock.run("pretrain components", pretrain_components, recipe, init, mixture,
                       pretrained, progress)  # fmt: skip
    config = TrainConfig(
        model=str(pretrained),
        data=str(mixture),
        stages=recipe.stages,
        max_length=recipe.max_length,
        logging_steps=recipe.logging_steps,
        save_steps=recipe.save_steps,
        progress=progress,
        seed=seed,
    )
    last = clock.run("stages " + "+".join(map(str, recipe.stages)), run_stages, config,
                     sorted(recipe.stages), out)  # fmt: skip
    title = f"GMAI-VL {recipe_name}" + (" (stage III only)" if stage_three_only else "")
    final = finish_run(out, last, curves, title)
    summary, scored = clock.run("held-out evaluation", evaluate_heldout, final, heldout,
                                progress, recipe.eval_limit)  # fmt: skip
    write_scores(summary, scored, out / "heldout.json")
    metadata = {
        **read_metadata(final),
        "recipe": recipe_name,
        "seed": seed,
        "heldout_accuracy": summary,
    }
    (final / "gmaivl.json").write_text(json.dumps(metadata, indent=2) + "\n")
    timing = {"phases": clock.phases, "total": clock.total(), "threads": torch.get_num_threads()}
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(f"held-out accuracy: {format_summary(summary)}")
    print(f"time (this run's phases): wall {timing['total']['wall_s']} s, "
          f"CPU {timing['total']['cpu_s']} s; final checkpoint: {final}")  # fmt: skip
    return summary
