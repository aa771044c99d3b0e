"""An xtuner `llm_adapter/` (a peft LoRA) merged onto its base LLM, tensor by tensor.

`W' = W + (alpha / r) * B @ A` (peft's merge; `alpha / sqrt(r)` with rsLoRA),
done on the base tensor as it is read, before any key mapping: a LoRA on
InternLM2's fused `wqkv` is merged before the split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from training.model.import_.tensors import FileTensors, TensorSource, weight_files

PEFT_PREFIX = "base_model.model."


class LoraMerged:
    """`base` with the adapter in `adapter_dir` folded into the weights it targets."""

    def __init__(self, base: TensorSource, adapter_dir: Path) -> None:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        r, alpha = config["r"], config.get("lora_alpha", config["r"])
        self.scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        self.base = base
        self.adapter = FileTensors(weight_files(adapter_dir))
        self.pairs: dict[str, tuple[str, str]] = {}
        for key in self.adapter.names():
            if ".lora_A." in key:
                module = key.removeprefix(PEFT_PREFIX).split(".lora_A.")[0]
                b = key.replace(".lora_A.", ".lora_B.")
                self.pairs[module + ".weight"] = (key, b)
        missing = sorted(set(self.pairs) - set(base.names()))
        if missing:
            raise ValueError(f"the adapter targets weights the base LLM lacks: {missing[:3]}")

    def files(self) -> list[Path]:
        return self.base.files() + self.adapter.files()

    def names(self) -> list[str]:
        return self.base.names()

    def get(self, key: str) -> torch.Tensor:
        tensor = self.base.get(key)
        pair = self.pairs.get(key)
        if pair is None:
            return tensor
        a, b = (self.adapter.get(k).float() for k in pair)
        return (tensor.float() + self.scale * (b @ a)).to(tensor.dtype)
