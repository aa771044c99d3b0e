"""`gmai-vl train --preset demo`: the demo recipe, a miniature of the real one.

    OUT/init/         the assembled model (`gmai-vl model init` with the preset's shape)
    OUT/pretrained/   after component pretraining (LM on corpus text, vision CLIP-style)
    OUT/stage{1,2,3}/ the three stages (Trainer checkpoints, log, export)
    OUT/final/        the served checkpoint, with loss.png and the held-out scores
    OUT/heldout.json  every held-out answer; OUT/timing.json wall and CPU time per phase

Why the learning rates differ from the paper's (1e-3 / 1e-4 / 1e-5): those suit a
7B LM and a CLIP ViT-L pretrained on billions of tokens and pairs, where stage III
must not disturb what is already known. The demo's components are pretrained for
a minute on a few thousand sentences; at 1e-5 stage III would not move them in
the few hundred steps 2 CPU cores allow. The demo keeps the paper's order
(projector first at the highest rate, then the vision encoder, then everything)
and its decreasing rates, scaled to a tiny model: 1e-3, 5e-4, 3e-4.
Every phase resumes: a finished phase is skipped when the command is run again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from training.model.assemble import assemble_checkpoint
from training.model.presets import PRESETS
from training.train.config import DEMO_RECIPES, StageConfig, TrainConfig
from training.train.dataset import load_examples
from training.train.export import export_checkpoint, read_metadata
from training.train.heldout import evaluate_heldout, format_summary, write_scores
from training.train.pretrain import (
    PretrainConfig,
    pretrain_language_model,
    pretrain_vision_encoder,
)
from training.train.stages import finish_run, run_stages

log = logging.getLogger("gmaivl.train")


def _stages(
    steps: tuple[int, int, int], batch: int, rates: tuple[float, float, float] = (1e-3, 5e-4, 3e-4)
) -> dict[int, StageConfig]:
    return {
        1: StageConfig("I: projector", ("projector",), rates[0], max_steps=steps[0],
                       batch_size=batch),
        2: StageConfig("II: projector + vision", ("projector", "vision"), rates[1],
                       max_steps=steps[1], batch_size=batch),
        3: StageConfig("III: full model", ("projector", "vision", "llm"), rates[2],
                       max_steps=steps[2], batch_size=batch),
    }  # fmt: skip


@dataclass(frozen=True)
class DemoRecipe:
    preset: str
    lm: PretrainConfig
    vision: PretrainConfig
    stages: dict[int, StageConfig] = field(default_factory=dict)
    eval_limit: int | None = None
    """score only the first N held-out questions (the smoke recipe)"""
    threads: int = 1
    """torch threads. One is the fastest here: a 1M-parameter model's ops are too small to
    split, and on 2 shared cores a second thread made a training step 3x slower (measured)."""

    def stage_three_only(self) -> DemoRecipe:
        """The ablation: stage III alone, from the same pretrained parts, same total steps."""
        total = sum(s.max_steps for s in self.stages.values())
        three = self.stages[3]
        return DemoRecipe(self.preset, self.lm, self.vision,
                          {3: StageConfig(three.name, three.train, three.learning_rate,
                                          max_steps=total, batch_size=three.batch_size)},
                          self.eval_limit, self.threads)  # fmt: skip


RECIPES: dict[str, DemoRecipe] = {
    "demo": DemoRecipe(
        preset="tiny",
        lm=PretrainConfig(steps=300, learning_rate=2e-3, batch_size=32),
        vision=PretrainConfig(steps=250, learning_rate=1e-3, batch_size=48),
        stages=_stages((200, 400, 800), batch=16),
    ),
    # A few seconds of each phase: the CI's end-to-end check of the whole path.
    "demo-smoke": DemoRecipe(
        preset="tiny",
        lm=PretrainConfig(steps=60, learning_rate=2e-3, batch_size=16),
        vision=PretrainConfig(steps=40, learning_rate=1e-3, batch_size=32),
        stages=_stages((30, 30, 300), batch=16, rates=(1e-3, 1e-3, 1e-3)),
        eval_limit=60,
    ),
}

assert set(RECIPES) == set(DEMO_RECIPES), "the CLI's preset names must match the recipes"


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
        max_length=256,
        logging_steps=10,
        save_steps=500,
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
