import json
from pathlib import Path

import pytest
import yaml

import training
from training.train.config import PAPER_STAGES, LoraSettings, config_from_dict, load_train_config


def test_defaults_are_the_papers_stages():
    config = config_from_dict({"model": "m", "data": "d"})
    assert [(s.train, s.learning_rate) for s in config.stages.values()] == [
        (("projector",), 1e-3),
        (("projector", "vision"), 1e-4),
        (("projector", "vision", "llm"), 1e-5),
    ]


def test_a_yaml_file_overrides_single_fields_and_resolves_paths(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "model: init\ndata: data/list.json\nmax_length: 512\n"
        "stages:\n  2: {learning_rate: 2.0e-4, data: other.json}\n"
        "  3: {lora: {r: 8, alpha: 16}}\n"
    )
    config = load_train_config(tmp_path / "run.yaml")
    assert config.model == str(tmp_path / "init")
    assert config.data == str(tmp_path / "data" / "list.json")
    assert config.max_length == 512
    assert config.stages[1] == PAPER_STAGES[1]
    assert config.stages[2].learning_rate == 2e-4
    assert config.stages[2].data == str(tmp_path / "other.json")
    assert config.stages[2].train == PAPER_STAGES[2].train
    assert config.stages[3].lora == LoraSettings(r=8, alpha=16)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data": "d", "epoch": 1}, r"unknown fields \['epoch'\], missing fields \['model'\]"),
        ({"model": "m", "data": "d", "stages": {4: {}}}, "numbered 1, 2, 3"),
        ({"model": "m", "data": "d", "stages": {1: {"lr": 1}}}, r"unknown stage fields \['lr'\]"),
        ({"model": "m", "data": "d", "stages": {1: {"train": ["head"]}}}, "must name some of"),
        ({"model": "m", "data": "d", "stages": {1: {"lora": {"r": 4}}}}, "`llm` must train"),
        ({"model": "m", "data": "d", "mixed_precision": "fp8"}, "mixed_precision"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(raw, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(raw)


def test_the_shipped_run_and_launcher_configs_load():
    configs = Path(training.__file__).parent / "configs"
    run = load_train_config(configs / "gmai_vl_7b.yaml")
    assert run.deepspeed == str(configs / "ds_zero2.json")
    assert [s.learning_rate for s in run.stages.values()] == [1e-3, 1e-4, 1e-5]
    for name, stage in (("ds_zero2.json", 2), ("ds_zero3.json", 3)):
        assert json.loads((configs / name).read_text())["zero_optimization"]["stage"] == stage
    assert (
        "LlamaDecoderLayer"
        in json.loads((configs / "fsdp.json").read_text())["transformer_layer_cls_to_wrap"]
    )
    assert yaml.safe_load((configs / "accelerate_fsdp.yaml").read_text())["distributed_type"] == (
        "FSDP"
    )
