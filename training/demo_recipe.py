"""The demo recipe, all of it: `gmai-vl data demo --preset P` and `gmai-vl train --preset P`.

A preset names a corpus size (training/data/demo.py writes the corpus), a model shape
(training/model/presets.py), the component pretraining (training/train/pretrain.py)
and the three stages (training/train/stages.py); training/train/demo.py runs them in
that order. Nothing here imports torch or numpy: the CLI reads the preset names when
it builds its parser.

Why the learning rates differ from the paper's (1e-3 / 1e-4 / 1e-5): those suit a
7B LM and a CLIP ViT-L pretrained on billions of tokens and pairs, where stage III
must not disturb what is already known. The demo's components are pretrained for
a minute on a few thousand sentences; at 1e-5 stage III would not move them in
the few hundred steps 2 CPU cores allow. The demo keeps the paper's order
(projector first at the highest rate, then the vision encoder, then everything)
and its decreasing rates, scaled to a tiny model: 1e-3, 5e-4, 3e-4.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from training.train.config import StageConfig


@dataclass(frozen=True)
class DemoConfig:
    """The procedural corpus (`gmai-vl data demo`)."""

    train_per_modality: int = 400
    heldout_per_modality: int = 40
    image_size: int = 112
    lesion_rate: float = 0.6
    """share of studies with a lesion (the rest have none)"""
    seed: int = 0


@dataclass(frozen=True)
class PretrainConfig:
    """One component pretraining loop (the LM on text, or the vision encoder CLIP-style)."""

    steps: int
    learning_rate: float
    batch_size: int = 32
    warmup: int = 20
    seed: int = 0


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
    """the model shape (training/model/presets.py)"""
    lm: PretrainConfig
    vision: PretrainConfig
    stages: dict[int, StageConfig] = field(default_factory=dict)
    corpus: DemoConfig = DemoConfig()
    """the corpus `gmai-vl data demo --preset` writes for this recipe"""
    eval_limit: int | None = None
    """score only the first N held-out questions (the smoke recipe)"""
    threads: int = 1
    """torch threads. One is the fastest here: a 1M-parameter model's ops are too small to
    split, and on 2 shared cores a second thread made a training step 3x slower (measured)."""
    max_length: int = 256
    logging_steps: int = 10
    save_steps: int = 500

    def stage_three_only(self) -> DemoRecipe:
        """The ablation: stage III alone, from the same pretrained parts, same total steps."""
        total = sum(s.max_steps for s in self.stages.values())
        return replace(self, stages={3: replace(self.stages[3], max_steps=total)})


RECIPES: dict[str, DemoRecipe] = {
    "demo": DemoRecipe(
        preset="tiny",
        lm=PretrainConfig(steps=300, learning_rate=2e-3, batch_size=32),
        vision=PretrainConfig(steps=250, learning_rate=1e-3, batch_size=48),
        stages=_stages((200, 400, 800), batch=16),
        corpus=DemoConfig(),
    ),
    # A few seconds of each phase: the CI's end-to-end check of the whole path.
    "demo-smoke": DemoRecipe(
        preset="tiny",
        lm=PretrainConfig(steps=60, learning_rate=2e-3, batch_size=16),
        vision=PretrainConfig(steps=40, learning_rate=1e-3, batch_size=32),
        stages=_stages((30, 30, 300), batch=16, rates=(1e-3, 1e-3, 1e-3)),
        corpus=DemoConfig(train_per_modality=60, heldout_per_modality=6),
        eval_limit=60,
    ),
}

RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)
"""the `--preset` choices of `gmai-vl data demo` and `gmai-vl train`"""
