"""Stage definitions as plain config, overridable from a YAML or JSON file.

A run file looks like (every field optional except `model` and `data`):

    model: runs/init            # checkpoint to start stage I from (`gmai-vl model init`)
    data: data/example_list.json   # mixture (GMAI-VL format) or a LLaVA JSON list
    max_length: 2048
    stages:
      1: {learning_rate: 1.0e-3, epochs: 1}
      2: {learning_rate: 1.0e-4, data: data/stage2_list.json}
      3: {learning_rate: 1.0e-5, lora: {r: 64, alpha: 128}}
    deepspeed: training/configs/ds_zero2.json

The paper's learning rates (1e-3, 1e-4, 1e-5) are the defaults: they are meant
for a pretrained CLIP ViT-L and a 7B LM. Presets may choose others and say why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

MODULE_GROUPS = ("projector", "vision", "llm")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the LM's attention and MLP projections (PEFT); merged into the export."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )  # fmt: skip


@dataclass(frozen=True)
class StageConfig:
    name: str
    train: tuple[str, ...]
    """module groups that learn: projector, vision, llm; the rest stay frozen"""
    learning_rate: float
    epochs: float = 1.0
    max_steps: int = -1
    """overrides `epochs` when positive"""
    lr_scheduler: str = "cosine"
    warmup: float = 0.03
    """warmup steps, or a fraction of the stage's steps when below 1"""
    batch_size: int = 8
    grad_accum: int = 1
    weight_decay: float = 0.0
    data: str | None = None
    """this stage's mixture or LLaVA JSON; None: the run's `data`"""
    lora: LoraSettings | None = None
    """LoRA instead of full LM training (needs `llm` in `train`)"""

    def __post_init__(self) -> None:
        unknown = set(self.train) - set(MODULE_GROUPS)
        if unknown or not self.train:
            raise ValueError(f"stage {self.name}: train must name some of {MODULE_GROUPS}")
        if self.lora is not None and "llm" not in self.train:
            raise ValueError(f"stage {self.name}: LoRA adapts the LM, so `llm` must train")
        if self.learning_rate <= 0:
            raise ValueError(f"stage {self.name}: learning_rate must be positive")


PAPER_STAGES: dict[int, StageConfig] = {
    1: StageConfig("I: projector", ("projector",), 1e-3),
    2: StageConfig("II: projector + vision", ("projector", "vision"), 1e-4),
    3: StageConfig("III: full model", ("projector", "vision", "llm"), 1e-5),
}


@dataclass(frozen=True)
class TrainConfig:
    model: str
    """checkpoint stage I starts from"""
    data: str
    """default mixture / LLaVA JSON for every stage"""
    stages: dict[int, StageConfig] = field(default_factory=lambda: dict(PAPER_STAGES))
    image_root: str | None = None
    """where a LLaVA JSON list's image paths are relative to (default: its folder)"""
    max_length: int = 2048
    seed: int = 0
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    mixed_precision: str = "auto"
    """auto (bf16 where the GPU has it, else fp16 on GPU, fp32 on CPU) | no | bf16 | fp16"""
    gradient_checkpointing: bool = False
    deepspeed: str | None = None
    """a DeepSpeed JSON (training/configs/ds_zero2.json, ds_zero3.json)"""
    fsdp: str = ""
    """the Trainer's FSDP option, e.g. "full_shard auto_wrap" (see docs/training.md)"""
    fsdp_config: str | None = None
    dataloader_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError("mixed_precision must be auto, no, bf16 or fp16")
        if set(self.stages) - {1, 2, 3}:
            raise ValueError("stages are numbered 1, 2, 3")


def _stage_from(base: StageConfig, overrides: dict[str, Any]) -> StageConfig:
    known = {f.name for f in fields(StageConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown stage fields {sorted(unknown)}; known: {sorted(known)}")
    values = dict(overrides)
    if "train" in values:
        values["train"] = tuple(values["train"])
    if isinstance(values.get("lora"), dict):
        lora = dict(values["lora"])
        if "target_modules" in lora:
            lora["target_modules"] = tuple(lora["target_modules"])
        values["lora"] = LoraSettings(**lora)
    return replace(base, **values)


def config_from_dict(raw: dict[str, Any], base_dir: Path | None = None) -> TrainConfig:
    """A TrainConfig from parsed YAML/JSON; stage entries override the paper's defaults.

    Every unknown key is reported at once, before any model loads."""
    raw = dict(raw)
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(raw) - known
    missing = {"model", "data"} - set(raw)
    if unknown or missing:
        raise ValueError(
            f"run config: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}"
        )
    stages = dict(PAPER_STAGES)
    for key, overrides in (raw.pop("stages", None) or {}).items():
        number = int(key)
        if number not in stages:
            raise ValueError(f"stages are numbered 1, 2, 3; got {key}")
        stages[number] = _stage_from(stages[number], overrides or {})
    if base_dir is not None:  # paths in a file are relative to the file
        for key in ("model", "data", "image_root", "deepspeed", "fsdp_config"):
            if raw.get(key) and not Path(raw[key]).is_absolute():
                raw[key] = str(base_dir / raw[key])
        for number, stage in stages.items():
            if stage.data and not Path(stage.data).is_absolute():
                stages[number] = replace(stage, data=str(base_dir / stage.data))
    return TrainConfig(stages=stages, **raw)


def load_train_config(path: Path) -> TrainConfig:
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(text) or {}
    else:
        raw = json.loads(text)
    return config_from_dict(raw, Path(path).parent)
