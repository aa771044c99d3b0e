"""Engines refuse a non-native checkpoint before loading it, naming its format and
the `gmai-vl model import` command; a native LLaVA passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.components import make_engine
from service.config import Settings
from service.engines.checkpoint import UnservableCheckpoint, check_servable


def checkpoint(path: Path, config: dict, **files: dict) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    for name, data in files.items():
        target = path / name.replace("__", "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data))
    return path


NATIVE = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]}


@pytest.mark.parametrize(
    ("config", "files", "named", "convertible"),
    [
        ({"model_type": "enhanced_llava", "auto_map": {"AutoConfig": "x.Y"}}, {},
         "enhanced_llava", True),
        ({"model_type": "internlm2"}, {"projector__config.json": {"depth": 2}}, "xtuner", True),
        ({"model_type": "llava_llama", "architectures": ["LlavaLlamaForCausalLM"]}, {},
         "original LLaVA", True),
        ({"model_type": "llava", "mm_projector_type": "mlp2x_gelu"}, {}, "original LLaVA", True),
        (NATIVE, {"tokenizer_config.json": {"auto_map": {"AutoTokenizer": ["t.T", None]}}},
         "remote-code", True),
        ({**NATIVE, "text_config": {"auto_map": {"AutoConfig": "c.C"}}}, {}, "remote-code", True),
        ({"model_type": "qwen2"}, {}, "'qwen2'", False),
    ],
)  # fmt: skip
def test_non_native_layouts_are_refused_with_the_import_command(
    tmp_path, config, files, named, convertible
):
    path = checkpoint(tmp_path / "ckpt", config, **files)
    with pytest.raises(UnservableCheckpoint) as caught:
        check_servable(path)
    message = str(caught.value)
    assert named in message
    command = f"gmai-vl model import {path} --out {path}-native"
    assert (command in message) is convertible


def test_native_llava_passes(tmp_path, tiny_checkpoint):
    check_servable(tiny_checkpoint)
    with pytest.raises(UnservableCheckpoint, match="no checkpoint directory"):
        check_servable(tmp_path / "absent")


@pytest.mark.parametrize("engine", ["transformers", "vllm"])
def test_make_engine_checks_before_loading(tmp_path, engine):
    path = checkpoint(tmp_path / "ckpt", {"model_type": "enhanced_llava"})
    with pytest.raises(UnservableCheckpoint, match="enhanced_llava"):
        make_engine(Settings(engine=engine, model=path))
