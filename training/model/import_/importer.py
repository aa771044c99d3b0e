"""The import: plan (read JSON, map every key, check against the native model's
keys), then convert tensor by tensor into shards, then tokenizer, processor,
chat template and `import.json`. Written beside the destination and renamed
into place: a present `config.json` means a complete import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    MistralConfig,
)

from training.model.import_ import internlm2, keymap, parts, sources, template_choice
from training.model.import_.formats import Detected, ImportFormatError, check_format
from training.model.import_.tensors import ShardWriter, TensorSink

log = logging.getLogger("gmaivl.training")
IMPORT_RECORD = "import.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# LLaVA fields in an original LLaVA config that are not the text model's.
NOT_TEXT_FIELDS = {
    "architectures",
    "auto_map",
    "model_type",
    "image_aspect_ratio",
    "tune_mm_mlp_adapter",
    "use_mm_proj",
    "unfreeze_mm_vision_tower",
    "freeze_mm_mlp_adapter",
    "image_grid_pinpoints",
    "tokenizer_model_max_length",
    "tokenizer_padding_side",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "_name_or_path",
    "mm_patch_merge_type",
}


@dataclass
class ImportOptions:
    format: str = "auto"
    vision_tower: Path | None = None
    llm: Path | None = None
    dtype: str | None = None
    chat_template: str | None = None
    max_shard_bytes: int = 4 << 30
    progress: bool = True


@dataclass
class Plan:
    src: Path
    detected: Detected
    sources: sources.Sources
    config: LlavaConfig
    tokenizer: Any
    image_token: str
    image_token_added: bool
    extra_rows: int
    dtype: torch.dtype
    template: template_choice.ChatTemplate
    parts: list[keymap.Part] = field(default_factory=list)
    expected: dict[str, tuple[int, ...]] = field(default_factory=dict)


def source_dtype(config: dict[str, Any]) -> torch.dtype:
    name = config.get("torch_dtype") or config.get("dtype") or "float16"
    if name not in DTYPES:
        raise ImportFormatError(f"source dtype {name!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[name]


def text_config(kind: str, config: dict[str, Any], vocab_size: int) -> LlamaConfig:
    if kind == "internlm2":
        args = internlm2.llama_config(config)
    else:
        args = {k: v for k, v in config.items() if k not in NOT_TEXT_FIELDS}
        args = {k: v for k, v in args.items() if not k.startswith("mm_")}
    args["vocab_size"] = vocab_size
    return (MistralConfig if kind == "mistral" else LlamaConfig)(**args)


def plan_import(
    src: Path, options: ImportOptions, open_tensors: sources.OpenTensors = sources.open_files
) -> Plan:
    """Everything decided and checked before a tensor is read."""
    detected = check_format(src, options.format)
    if detected.format == "enhanced-llava":
        found = sources.enhanced_llava(src, options.vision_tower, open_tensors)
    elif detected.format == "xtuner":
        found = sources.xtuner(src, options.vision_tower, options.llm, open_tensors)
    else:
        found = sources.original_llava(src, options.vision_tower, open_tensors)
    tokenizer = parts.load_tokenizer(found.tokenizer_dir)
    image_token, added = parts.image_token_of(tokenizer, found.image_token_id)
    directories = [src, found.tokenizer_dir]
    template = template_choice.choose(
        options.chat_template, directories, found.default_template, tokenizer, image_token
    )
    image_token_id = tokenizer.convert_tokens_to_ids(image_token)
    vocab = int(found.llm_config["vocab_size"])
    extra_rows = max(0, image_token_id + 1 - vocab)
    dtype = DTYPES[options.dtype] if options.dtype else source_dtype(found.llm_config)

    vision = CLIPVisionConfig(
        **{
            k: v
            for k, v in found.vision_config.items()
            if k not in ("architectures", "transformers_version")
        }
    )
    text = text_config(found.llm_kind, found.llm_config, vocab + extra_rows)
    patches = (vision.image_size // vision.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=patches + (1 if found.strategy == "full" else 0),
        projector_hidden_act="gelu",
        vision_feature_layer=found.feature_layer,
        vision_feature_select_strategy=found.strategy,
        tie_word_embeddings=text.tie_word_embeddings,
        multimodal_projector_bias=True,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    config.dtype = str(dtype).removeprefix("torch.")
    plan = Plan(
        src, detected, found, config, tokenizer, image_token, added, extra_rows, dtype, template
    )
    llm = keymap.llm_mapper(found.llm_kind, found.llm_config, extra_rows)
    if found.root is not None:
        wrap = keymap.enhanced_llava_mapper if detected.format == "enhanced-llava" else None
        mapper = (wrap or keymap.original_llava_mapper)(llm)
        plan.parts.append(keymap.Part("checkpoint", found.root, mapper))
    if found.llm is not None:
        plan.parts.append(keymap.Part("llm", found.llm, llm))
    if found.vision is not None:
        plan.parts.append(keymap.Part("vision", found.vision, keymap.vision_mapper))
    if found.projector is not None:
        plan.parts.append(keymap.Part("projector", found.projector, keymap.projector_mapper))
    plan.expected = expected_shapes(config)
    check_keys(plan)
    return plan


def expected_shapes(config: LlavaConfig) -> dict[str, tuple[int, ...]]:
    """The native checkpoint's keys and shapes, from models built on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        tower = CLIPVisionModel(config.vision_config)
        lm = AutoModelForCausalLM.from_config(config.text_config)
    shapes = {
        "vision_tower.vision_model." + k.removeprefix("vision_model."): tuple(v.shape)
        for k, v in tower.state_dict().items()
    }
    shapes.update({f"language_model.{k}": tuple(v.shape) for k, v in lm.state_dict().items()})
    if config.text_config.tie_word_embeddings:
        shapes.pop("language_model.lm_head.weight", None)
    text, vision = config.text_config.hidden_size, config.vision_config.hidden_size
    for name, shape in (("linear_1", (text, vision)), ("linear_2", (text, text))):
        shapes[f"multi_modal_projector.{name}.weight"] = shape
        shapes[f"multi_modal_projector.{name}.bias"] = (text,)
    return {k: s for k, s in shapes.items() if not k.endswith("position_ids")}


def check_keys(plan: Plan) -> None:
    """Every source key maps (or is knowingly dropped), and the result is exactly
    the native model's key set: checked on names before any tensor is read."""
    produced: list[str] = []
    unknown: list[str] = []
    for part in plan.parts:
        for key in part.source.names():
            try:
                rule = part.mapper(key)
            except KeyError:
                unknown.append(f"{part.name}:{key}")
                continue
            if rule is not None:
                produced += rule.names
    if unknown:
        raise ImportFormatError(f"{len(unknown)} source keys have no mapping, e.g. {unknown[:3]}")
    duplicates = sorted(k for k, n in Counter(produced).items() if n > 1)
    missing = sorted(set(plan.expected) - set(produced))
    extra = sorted(set(produced) - set(plan.expected))
    if duplicates or missing or extra:
        raise ImportFormatError(
            "the source does not make a complete model: "
            f"missing {missing[:3]} ({len(missing)}), unexpected {extra[:3]} ({len(extra)}), "
            f"duplicated {duplicates[:3]}"
        )


def convert(plan: Plan, sink: TensorSink, progress: bool = False) -> None:
    """Source tensors -> native tensors (in the target dtype), one at a time."""
    total = sum(len(part.source.names()) for part in plan.parts)
    with tqdm(total=total, desc="tensors", unit="t", disable=not progress) as bar:
        for part in plan.parts:
            for key in part.source.names():
                rule = part.mapper(key)
                if rule is not None:
                    for name, tensor in zip(
                        rule.names, rule.convert(part.source.get(key)), strict=True
                    ):
                        if tuple(tensor.shape) != plan.expected[name]:
                            raise ImportFormatError(
                                f"{name}: shape {tuple(tensor.shape)}, the config says "
                                f"{plan.expected[name]} (source key {key})"
                            )
                        sink.add(name, tensor.to(plan.dtype))
                bar.update()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def write_extras(plan: Plan, out: Path) -> None:
    """Config, generation config, tokenizer, processor with the chat template, import.json."""
    found, tokenizer = plan.sources, plan.tokenizer
    plan.config.save_pretrained(out)
    end_of_turn = plan.template.end_of_turn  # checked in the plan: a token of the tokenizer
    end_id = tokenizer.convert_tokens_to_ids(end_of_turn)
    llm_eos = found.llm_config.get("eos_token_id")
    eos = [
        end_id,
        *[
            e
            for e in (llm_eos if isinstance(llm_eos, list) else [llm_eos])
            if e is not None and e != end_id
        ],
    ]
    tokenizer.eos_token = end_of_turn  # an answer ends at the end of the assistant turn
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or end_of_turn
    GenerationConfig(
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=found.llm_config.get("bos_token_id"),
    ).save_pretrained(out)
    template = plan.template.text  # a source's exactly as it came
    tokenizer.chat_template = template
    images = parts.image_processor(
        parts.find_preprocessor(found.preprocessor_dirs),
        plan.config.vision_config.image_size,
        found.pad_to_square,
    )
    strategy = plan.config.vision_feature_select_strategy
    processor = parts.build_processor(
        tokenizer,
        images,
        plan.config.vision_config.patch_size,
        strategy,
        template,
        plan.image_token,
    )
    processor.save_pretrained(out)
    parts.strip_remote_code(out)
    files = sorted(
        {p for part in plan.parts for p in part.source.files()} | set(found.config_files)
    )
    record = {
        "source": str(plan.src.resolve()),
        "format": plan.detected.format,
        "detected": plan.detected.reason,
        "mapping_version": keymap.MAPPING_VERSION,
        "text_model": found.llm_kind,
        "dtype": str(plan.dtype).removeprefix("torch."),
        "chat_template": plan.template.record(),
        "image_token": plan.image_token,
        "image_token_added": plan.image_token_added,
        "embedding_rows_added": plan.extra_rows,
        "vision_feature_layer": found.feature_layer,
        "pad_to_square": found.pad_to_square,
        "source_files": {str(p): sha256(p) for p in files},
    }
    (out / IMPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def import_checkpoint(src: Path, out: Path, options: ImportOptions) -> Plan:
    """Import `src` into `out` (which must not exist yet)."""
    if out.exists() and any(out.iterdir()):
        raise ImportFormatError(f"{out} exists and is not empty")
    plan = plan_import(src, options)
    log.info("importing %s as %s (%s)", src, plan.detected.format, plan.detected.reason)
    tmp = out.with_name(out.name + ".importing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        writer = ShardWriter(tmp, options.max_shard_bytes)
        convert(plan, writer, options.progress)
        writer.close()
        write_extras(plan, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return plan
