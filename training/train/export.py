"""Export a trained model as a Hugging Face LLaVA checkpoint that transformers and vLLM load.

A LoRA stage also writes its adapter (PEFT format: `adapter_config.json`,
`adapter_model.safetensors`, the projector it trained as `modules_to_save`)
beside the export, in `OUT/stageN/adapter/`, to be served over the stage's
input checkpoint with `--lora NAME=DIR` instead of as a merged model.

Weights (LoRA merged first), config, generation config, processor, tokenizer
and chat template, written with vLLM's `vision_tower.vision_model.*` keys
(training/model/assemble.py explains why), plus `gmaivl.json`: what the
checkpoint is (preset, stage, step, data, chat template). The export is written
beside its destination and renamed into place, so a present `config.json`
means a complete export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from training.model.assemble import METADATA_FILE, to_vllm_layout


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model: LoRA adapters folded into their base weights."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model


ADAPTER_DIR = "adapter"


def export_adapter(model: Any, out: Path) -> Path:
    """The PEFT adapter alone (its base: the stage's input checkpoint), renamed into
    place like the export."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def read_metadata(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def export_from_trainer(trainer: Any, processor: Any, out: Path, metadata: dict[str, Any]) -> Path:
    """Export at the end of a stage, on every launcher: the Trainer gathers sharded weights
    (DeepSpeed ZeRO-3, FSDP) in `save_model`; the main process alone writes the checkpoint.
    LoRA runs (ZeRO-2 or DDP: full weights on every rank) are merged on the main process."""
    from peft import PeftModel

    tmp = out.with_name(out.name + ".trainer")
    if not isinstance(trainer.model, PeftModel):
        trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        if isinstance(trainer.model, PeftModel):
            export_adapter(trainer.model, out.parent / ADAPTER_DIR)  # before merging
            export_checkpoint(trainer.model, processor, out, metadata)
        else:
            finish_export(tmp, processor, out, metadata)
    trainer.accelerator.wait_for_everyone()
    return out


def finish_export(saved: Path, processor: Any, out: Path, metadata: dict[str, Any]) -> Path:
    """A folder `save_pretrained` wrote -> the export: vLLM keys, processor, gmaivl.json."""
    to_vllm_layout(saved)
    processor.save_pretrained(saved)
    record = {**metadata, "chat_template": processor.chat_template}
    (saved / METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    saved.rename(out)
    return out


def export_checkpoint(
    model: torch.nn.Module, processor: Any, out: Path, metadata: dict[str, Any]
) -> Path:
    """Write `model` to `out`; `metadata` becomes gmaivl.json (the chat template is added)."""
    model = merged(model)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    return finish_export(tmp, processor, out, metadata)
