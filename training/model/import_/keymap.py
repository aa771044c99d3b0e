"""Per format: a source key -> the native key(s) and how to convert the tensor.

Native keys are the ones our export writes and both engines load:
`language_model.model.*`, `language_model.lm_head.weight`,
`multi_modal_projector.linear_{1,2}.*`, `vision_tower.vision_model.*`.
LLM renames apply only inside the LLM's own key space (a vision key that
happens to contain `output.` is never touched).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from training.model.import_ import internlm2
from training.model.import_.tensors import TensorSource

MAPPING_VERSION = 1
Convert = Callable[[torch.Tensor], list[torch.Tensor]]


def same(tensor: torch.Tensor) -> list[torch.Tensor]:
    return [tensor]


@dataclass(frozen=True)
class Rule:
    names: list[str]
    convert: Convert = same


Mapper = Callable[[str], "Rule | None"]  # None drops the key; KeyError: unknown key


@dataclass(frozen=True)
class Part:
    """One tensor source and the mapper of its keys."""

    name: str
    source: TensorSource
    mapper: Mapper


def grow_rows(extra: int) -> Convert:
    """Append `extra` rows (the mean row): room for an image token the vocabulary lacked."""

    def convert(tensor: torch.Tensor) -> list[torch.Tensor]:
        mean = tensor.float().mean(0, keepdim=True).to(tensor.dtype)
        return [torch.cat([tensor, mean.expand(extra, -1)])]

    return convert


def llm_mapper(kind: str, config: dict[str, Any], extra_rows: int) -> Mapper:
    """LLM-local keys (`model.*`, `lm_head.*` / `output.*`) -> native keys."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    dim = internlm2.head_dim(config)

    def split(tensor: torch.Tensor) -> list[torch.Tensor]:
        return list(internlm2.split_wqkv(tensor, heads, kv_heads, dim))

    def mapper(key: str) -> Rule | None:
        if key.endswith("rotary_emb.inv_freq"):
            return None
        if kind == "internlm2":
            names = internlm2.llama_key(key)
            if names is None:
                return None
        elif key.startswith(("model.", "lm_head.")):
            names = [key]
        else:
            raise KeyError(key)
        convert: Convert = split if len(names) == 3 else same
        if extra_rows and names[0] in ("model.embed_tokens.weight", "lm_head.weight"):
            convert = grow_rows(extra_rows)
        return Rule(["language_model." + n for n in names], convert)

    return mapper


CLIP_TOWER_PARTS = ("embeddings.", "encoder.", "pre_layrnorm.", "post_layernorm.")


def vision_mapper(key: str) -> Rule | None:
    """CLIP keys (a CLIPVisionModel's, with or without the `vision_model.` prefix that
    transformers 5 leaves out, or a whole CLIPModel's) -> the tower's."""
    local = key.removeprefix("vision_model.")
    if not local.startswith(CLIP_TOWER_PARTS) or local.endswith("position_ids"):
        return None  # the text half of a CLIPModel, projections, buffers
    return Rule(["vision_tower.vision_model." + local])


def projector_mapper(key: str) -> Rule | None:
    """xtuner's `nn.Sequential` projector (`model.0`, GELU, `model.2`) -> linear_1/2."""
    for old, new in (("model.0.", "linear_1."), ("model.2.", "linear_2.")):
        if key.startswith(old):
            return Rule(["multi_modal_projector." + new + key.removeprefix(old)])
    raise KeyError(key)


def enhanced_llava_mapper(llm: Mapper) -> Mapper:
    def mapper(key: str) -> Rule | None:
        if key.startswith("language_model."):
            return llm(key.removeprefix("language_model."))
        if key.startswith("vision_tower."):
            return vision_mapper(key.removeprefix("vision_tower."))
        if key.startswith("multi_modal_projector.linear_"):
            return Rule([key])
        raise KeyError(key)

    return mapper


def original_llava_mapper(llm: Mapper) -> Mapper:
    def mapper(key: str) -> Rule | None:
        if key.startswith("model.mm_projector."):
            return projector_mapper("model." + key.removeprefix("model.mm_projector."))
        if key.startswith("model.vision_tower.vision_tower."):
            return vision_mapper(key.removeprefix("model.vision_tower.vision_tower."))
        return llm(key)

    return mapper
