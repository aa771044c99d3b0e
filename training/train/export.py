"""Export a trained model as a Hugging Face LLaVA checkpoint that transformers and vLLM load.

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


def read_metadata(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def export_checkpoint(
    model: torch.nn.Module, processor: Any, out: Path, metadata: dict[str, Any]
) -> Path:
    """Write `model` to `out`; `metadata` becomes gmaivl.json (the chat template is added)."""
    model = merged(model)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    to_vllm_layout(tmp)
    processor.save_pretrained(tmp)
    record = {**metadata, "chat_template": processor.chat_template}
    (tmp / METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
