"""Per format: where the LLM, the vision tower, the projector and the tokenizer
of a source are, and what the source trained with (feature layer, padding).

The result is a `Sources` record the importer turns into one native checkpoint.
xtuner's LLaVA selects the vision tower's layer -2 and pads images to squares
without recording either in its output; LLaVA records both in its config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.model.import_.formats import ImportFormatError, config_of, read_json
from training.model.import_.lora import LoraMerged
from training.model.import_.tensors import FileTensors, TensorSource, weight_files

OpenTensors = Callable[[Path], TensorSource]

# openai/clip-vit-large-patch14-336's vision config: what original LLaVA names in
# `mm_vision_tower` without shipping the config.
CLIP_L_336 = {
    "model_type": "clip_vision_model",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}


def open_files(directory: Path) -> TensorSource:
    files = weight_files(directory)
    if not files:
        raise ImportFormatError(f"no weight files (*.safetensors, *.bin) in {directory}")
    return FileTensors(files)


@dataclass
class Sources:
    llm_kind: str  # internlm2 | llama | mistral
    llm_config: dict[str, Any]
    vision_config: dict[str, Any]
    tokenizer_dir: Path
    feature_layer: int
    strategy: str  # "default" drops CLS, "full" keeps it
    pad_to_square: bool
    default_template: str  # chat.py's, used when the source ships none that serves
    image_token_id: int | None
    root: TensorSource | None = None  # tensors of all kinds in one key space
    llm: TensorSource | None = None
    vision: TensorSource | None = None
    projector: TensorSource | None = None
    preprocessor_dirs: list[Path | None] = field(default_factory=list)
    config_files: list[Path] = field(default_factory=list)


def llm_kind(config: dict[str, Any]) -> str:
    text = (config.get("model_type", "") + " ".join(config.get("architectures") or ())).lower()
    for kind in ("internlm2", "mistral", "llama"):
        if kind in text:
            return kind
    raise ImportFormatError(
        f"text model {config.get('model_type')!r} is not supported: InternLM2, Llama or Mistral"
    )


def vision_config_of(directory: Path) -> dict[str, Any]:
    config = config_of(directory)
    if config is None:
        raise ImportFormatError(f"no config.json in the vision tower {directory}")
    if config.get("model_type") == "clip":  # a whole CLIPModel: its vision half
        return dict(config["vision_config"])
    if config.get("model_type") != "clip_vision_model":
        raise ImportFormatError(f"the vision tower {directory} is not CLIP")
    return config


def need(path: Path | None, flag: str, why: str) -> Path:
    if path is None:
        raise ImportFormatError(f"{why}: give {flag} DIR")
    if not (path / "config.json").is_file():
        raise ImportFormatError(f"no Hugging Face checkpoint (config.json) at {path}")
    return path


def enhanced_llava(
    src: Path, vision_tower: Path | None, open_tensors: OpenTensors = open_files
) -> Sources:
    config = read_json(src / "config.json")
    text = dict(config["text_config"])
    root = open_tensors(src)
    sources = Sources(
        llm_kind=llm_kind(text),
        llm_config=text,
        vision_config=dict(config["vision_config"]),
        tokenizer_dir=src,
        feature_layer=int(config.get("vision_feature_layer", -2)),
        strategy=config.get("vision_feature_select_strategy", "default"),
        pad_to_square=True,  # xtuner's LLaVA data pipeline pads to squares
        default_template="internlm2-chatml",
        image_token_id=config.get("image_token_index"),
        root=root,
        preprocessor_dirs=[src, vision_tower],
        config_files=[src / "config.json"],
    )
    if not any(k.startswith("vision_tower.") for k in root.names()):
        tower = need(vision_tower, "--vision-tower", "the checkpoint has no vision tower weights")
        sources.vision = open_tensors(tower)
    if sources.llm_kind != "internlm2":
        sources.default_template = "llava-v1"
    return sources


def xtuner(
    src: Path,
    vision_tower: Path | None,
    llm: Path | None,
    open_tensors: OpenTensors = open_files,
) -> Sources:
    projector = read_json(src / "projector" / "config.json")
    if projector.get("depth", 2) != 2 or projector.get("hidden_act", "gelu") != "gelu":
        raise ImportFormatError("only xtuner's 2-layer GELU projector is supported")
    if (src / "llm_adapter").is_dir():
        base = need(llm, "--llm", "llm_adapter/ is a LoRA")
        llm_dir, llm_tensors = base, LoraMerged(open_tensors(base), src / "llm_adapter")
    else:
        candidates = [src / "llm", src, llm]
        llm_dir = next((p for p in candidates if p and (p / "config.json").is_file()), None)
        llm_dir = need(llm_dir, "--llm", "the LLM was frozen and not saved")
        llm_tensors = open_tensors(llm_dir)
    tower_dir = src / "visual_encoder"
    if not (tower_dir / "config.json").is_file():
        tower_dir = need(vision_tower, "--vision-tower", "the ViT was frozen and not saved")
    llm_config = read_json(llm_dir / "config.json")
    tokenizer_dir = next(
        (p for p in (src, src / "llm", llm_dir) if (p / "tokenizer_config.json").is_file()),
        llm_dir,
    )
    kind = llm_kind(llm_config)
    return Sources(
        llm_kind=kind,
        llm_config=llm_config,
        vision_config=vision_config_of(tower_dir),
        tokenizer_dir=tokenizer_dir,
        feature_layer=-2,  # xtuner's LLaVA default, not recorded in its output
        strategy="default",
        pad_to_square=True,
        default_template="internlm2-chatml" if kind == "internlm2" else "llava-v1",
        image_token_id=None,
        llm=llm_tensors,
        vision=open_tensors(tower_dir),
        projector=open_tensors(src / "projector"),
        preprocessor_dirs=[tower_dir, vision_tower],
        config_files=[
            src / "projector" / "config.json",
            llm_dir / "config.json",
            tower_dir / "config.json",
        ],
    )


def original_llava(
    src: Path, vision_tower: Path | None, open_tensors: OpenTensors = open_files
) -> Sources:
    config = read_json(src / "config.json")
    if config.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ImportFormatError(
            f"projector {config.get('mm_projector_type')!r}: only mlp2x_gelu is supported"
        )
    root = open_tensors(src)
    has_tower = any(k.startswith("model.vision_tower.vision_tower.") for k in root.names())
    named = str(config.get("mm_vision_tower", ""))
    if vision_tower is not None:
        vision_config = vision_config_of(need(vision_tower, "--vision-tower", ""))
    elif has_tower and named.rstrip("/").endswith("clip-vit-large-patch14-336"):
        vision_config = dict(CLIP_L_336)
    else:
        need(None, "--vision-tower", f"the vision tower {named or '(unnamed)'} is not in {src}")
    sources = Sources(
        llm_kind=llm_kind(
            {
                "model_type": config.get("model_type", ""),
                "architectures": config.get("architectures"),
            }
        ),
        llm_config=config,
        vision_config=vision_config,
        tokenizer_dir=src,
        feature_layer=int(config.get("mm_vision_select_layer", -2)),
        strategy="full" if config.get("mm_vision_select_feature") == "cls_patch" else "default",
        pad_to_square=config.get("image_aspect_ratio") == "pad",
        default_template="llava-v1",
        image_token_id=None,
        root=root,
        preprocessor_dirs=[src, vision_tower],
        config_files=[src / "config.json"],
    )
    if not has_tower:
        sources.vision = open_tensors(vision_tower)  # type: ignore[arg-type]
    return sources
