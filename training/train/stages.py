"""One stage = one Hugging Face Trainer run over the stage's data, with the
stage's modules trainable and the rest frozen.

    OUT/stage1/checkpoint-N/   Trainer checkpoints (resume picks the last one)
    OUT/stage1/final/          the stage's export; its presence means "stage done"
    OUT/stage1/log.json        the Trainer's log history (loss per logging step)

Stage n starts from the previous configured stage's OUT/stage{k}/final (the first
from the run's `model`).
Distributed runs (DeepSpeed ZeRO, FSDP) are the Trainer's own: launch this
under `torchrun` or `accelerate launch` with the config's `deepspeed`/`fsdp`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoProcessor,
    LlavaForConditionalGeneration,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from training.train.collator import LlavaCollator
from training.train.config import StageConfig, TrainConfig
from training.train.dataset import LlavaDataset, describe, load_examples
from training.train.export import export_from_trainer, read_metadata
from training.train.plot import plot_losses

log = logging.getLogger("gmaivl.train")

# Parameter-name prefixes of each module group in LlavaForConditionalGeneration.
GROUP_PREFIXES = {
    "projector": ("model.multi_modal_projector.",),
    "vision": ("model.vision_tower.",),
    "llm": ("model.language_model.", "lm_head."),
}


class StageTrainer(Trainer):
    """The Trainer, resuming with the checkpoint's weights.

    transformers 5.19 writes LLaVA checkpoints in the original key layout
    (`language_model.model.*`) but resumes with a plain `load_state_dict`, which
    matches no key and silently keeps the stage's starting weights. Loading
    through `from_pretrained` maps the keys. DeepSpeed, FSDP and PEFT checkpoints
    keep the Trainer's own loaders."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        model = model if model is not None else self.model
        plain = isinstance(model, LlavaForConditionalGeneration)
        if not plain or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        saved = LlavaForConditionalGeneration.from_pretrained(resume_from_checkpoint,
                                                              dtype=model.dtype)  # fmt: skip
        model.load_state_dict(saved.state_dict())


def group_of(name: str) -> str:
    for group, prefixes in GROUP_PREFIXES.items():
        if name.startswith(prefixes):
            return group
    raise ValueError(f"parameter {name} belongs to no module group")


def set_trainable(model: torch.nn.Module, groups: tuple[str, ...]) -> dict[str, int]:
    """Freeze every parameter outside `groups`; returns trainable counts per group."""
    counts = dict.fromkeys(GROUP_PREFIXES, 0)
    for name, param in model.named_parameters():
        group = group_of(name)
        param.requires_grad_(group in groups)
        if group in groups:
            counts[group] += param.numel()
    return counts


def apply_lora(model: LlavaForConditionalGeneration, stage: StageConfig) -> torch.nn.Module:
    """Wrap the LM's projections with LoRA (PEFT); the projector, if the stage trains it,
    trains fully and is saved with the adapter (`modules_to_save`), the vision tower
    trains if the stage says so."""
    from peft import LoraConfig, get_peft_model

    lora = stage.lora
    assert lora is not None
    targets = "|".join(lora.target_modules)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=rf".*language_model.*\.({targets})",
        # A trained projector rides along with the adapter; without it the adapter
        # is LoRA alone, which vLLM's LoRA can serve too (docs/training.md).
        modules_to_save=["multi_modal_projector"] if "projector" in stage.train else None,
    )
    peft_model = get_peft_model(model, config)
    if "vision" in stage.train:
        for param in model.model.vision_tower.parameters():
            param.requires_grad_(True)
    return peft_model


def precision_flags(mode: str) -> dict[str, bool]:
    if mode == "no" or (mode == "auto" and not torch.cuda.is_available()):
        return {"bf16": False, "fp16": False}
    if mode == "auto":
        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16}
    return {"bf16": mode == "bf16", "fp16": mode == "fp16"}


def training_arguments(config: TrainConfig, stage: StageConfig, out: Path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out),
        num_train_epochs=stage.epochs,
        max_steps=stage.max_steps,
        per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum,
        learning_rate=stage.learning_rate,
        lr_scheduler_type=stage.lr_scheduler,
        warmup_steps=stage.warmup,
        weight_decay=stage.weight_decay,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        report_to=[],
        remove_unused_columns=False,  # the collator needs the raw image and messages
        dataloader_num_workers=config.dataloader_workers,
        gradient_checkpointing=config.gradient_checkpointing,
        deepspeed=config.deepspeed,
        fsdp=config.fsdp,
        fsdp_config=config.fsdp_config,
        disable_tqdm=not config.progress,
        use_cpu=not torch.cuda.is_available(),
        **precision_flags(config.mixed_precision),
    )


def stage_input(config: TrainConfig, number: int, out: Path) -> Path:
    """The previous configured stage's export; the first configured stage starts from `model`
    (so a config with only stage 3 fine-tunes `model` directly, as the ablation does)."""
    earlier = [n for n in config.stages if n < number]
    return out / f"stage{max(earlier)}" / "final" if earlier else Path(config.model)


def run_stage(config: TrainConfig, number: int, out: Path) -> Path:
    """Train stage `number` (resuming from its last checkpoint); returns its export."""
    stage = config.stages[number]
    stage_dir = out / f"stage{number}"
    final = stage_dir / "final"
    if (final / "config.json").is_file():
        log.info("stage %d already done (%s)", number, final)
        return final
    source = stage_input(config, number, out)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"stage {number} starts from {source}, which has no checkpoint")
    set_seed(config.seed)
    processor = AutoProcessor.from_pretrained(source)
    model = LlavaForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    counts = set_trainable(model, stage.train)
    if stage.lora is not None:
        model = apply_lora(model, stage)
    examples = load_examples(Path(stage.data or config.data), config.image_root, config.seed)
    log.info("stage %d (%s): trainable %s; data %s", number, stage.name, counts, describe(examples))
    collator = LlavaCollator(processor, model.config.image_seq_length, config.max_length)
    trainer = StageTrainer(
        model=model,
        args=training_arguments(config, stage, stage_dir),
        train_dataset=LlavaDataset(examples),
        data_collator=collator,
    )
    last = get_last_checkpoint(str(stage_dir)) if stage_dir.is_dir() else None
    if last:
        log.info("stage %d resumes from %s", number, last)
    trainer.train(resume_from_checkpoint=last)
    if trainer.is_world_process_zero():
        (stage_dir / "log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    metadata = {
        **read_metadata(source),
        "stage": number,
        "stage_name": stage.name,
        "step": trainer.state.global_step,
        "trained": True,
        "source": str(source),
        "data": stage.data or config.data,
    }
    export_from_trainer(trainer, processor, final, metadata)
    return final


def run_stages(config: TrainConfig, stages: list[int], out: Path) -> Path:
    """Stages in order; returns the last one's export."""
    last = None
    for number in stages:
        last = run_stage(config, number, out)
    assert last is not None
    return last


def finish_run(
    out: Path, last: Path, curves: dict[str, list[tuple[int, float]]], title: str
) -> Path:
    """OUT/final: the last stage's export with the loss curves (all phases) as loss.png.
    Under torchrun/accelerate only the main process (RANK 0) writes."""
    final = out / "final"
    if int(os.environ.get("RANK", "0")) != 0:
        return final
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(last, final)
    plot_losses({**curves, **stage_losses(out)}, final / "loss.png", title)
    shutil.copy(final / "loss.png", out / "loss.png")
    return final


def stage_losses(out: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, loss) per stage from the saved log histories, for plotting."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for number in (1, 2, 3):
        path = out / f"stage{number}" / "log.json"
        if path.is_file():
            history: list[dict[str, Any]] = json.loads(path.read_text())
            curves[f"stage {number}"] = [(h["step"], h["loss"]) for h in history if "loss" in h]
    return curves
