"""Stages on the real Trainer with the tiny model: freezing, resume, loss going down."""

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file

from training.train.config import LoraSettings, StageConfig, TrainConfig
from training.train.stages import run_stage, run_stages, set_trainable, stage_losses

GROUPS = {"projector": "multi_modal_projector.", "vision": "vision_tower.",
          "llm": ("language_model.", "lm_head.")}  # fmt: skip


def weights(checkpoint):
    return load_file(checkpoint / "model.safetensors")


def changed_groups(before, after):
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    return {g for g, prefix in GROUPS.items() if any(k.startswith(prefix) for k in changed)}


def config_for(model, corpus, stages, **overrides):
    return TrainConfig(model=str(model), data=str(corpus / "example_list.json"), stages=stages,
                       max_length=128, logging_steps=1, progress=False, **overrides)  # fmt: skip


def test_each_stage_trains_only_its_modules(tiny_checkpoint, demo_corpus, tmp_path):
    stages = {
        1: StageConfig("I", ("projector",), 1e-3, max_steps=3, batch_size=4),
        2: StageConfig("II", ("projector", "vision"), 1e-3, max_steps=3, batch_size=4),
    }
    final = run_stages(config_for(tiny_checkpoint, demo_corpus, stages), [1, 2], tmp_path)
    start, one, two = (
        weights(tiny_checkpoint),
        weights(tmp_path / "stage1" / "final"),
        weights(final),
    )
    assert changed_groups(start, one) == {"projector"}
    assert changed_groups(one, two) == {"projector", "vision"}
    meta = json.loads((final / "gmaivl.json").read_text())
    assert (meta["stage"], meta["step"], meta["trained"]) == (2, 3, True)
    assert meta["source"] == str(tmp_path / "stage1" / "final")
    assert meta["chat_template"]


def test_set_trainable_counts_and_refuses_unknown_parameters(tiny_checkpoint):
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(tiny_checkpoint)
    counts = set_trainable(model, ("vision",))
    assert counts["projector"] == counts["llm"] == 0 and counts["vision"] > 0
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == counts["vision"]
    model.register_parameter("stray", torch.nn.Parameter(torch.zeros(1)))
    with pytest.raises(ValueError, match="no module group"):
        set_trainable(model, ("vision",))


def test_an_interrupted_stage_resumes_from_its_last_checkpoint(
    tiny_checkpoint, demo_corpus, tmp_path, caplog
):
    stage = {1: StageConfig("I", ("projector",), 1e-3, max_steps=4, batch_size=4)}
    config = config_for(tiny_checkpoint, demo_corpus, stage, save_steps=2)
    straight = run_stage(config, 1, tmp_path / "a")
    # The same run, interrupted after step 2: only checkpoint-2 survives.
    interrupted = tmp_path / "b" / "stage1"
    run_stage(config, 1, tmp_path / "b")
    shutil.rmtree(interrupted / "final")
    shutil.rmtree(interrupted / "checkpoint-4")
    (interrupted / "log.json").unlink()
    with caplog.at_level(logging.INFO, logger="gmaivl.train"):
        resumed = run_stage(config, 1, tmp_path / "b")
    assert "resumes from" in caplog.text and "checkpoint-2" in caplog.text
    assert [s for s, _ in stage_losses(tmp_path / "b")["stage 1"]] == [1, 2, 3, 4]
    a, b = weights(straight), weights(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert run_stage(config, 1, tmp_path / "b") == resumed  # done: not trained again


def test_full_training_lowers_the_loss(tiny_checkpoint, demo_corpus, tmp_path):
    stage = {3: StageConfig("III", ("projector", "vision", "llm"), 2e-3, max_steps=30,
                            batch_size=8, warmup=0)}  # fmt: skip
    run_stages(config_for(tiny_checkpoint, demo_corpus, stage), [3], tmp_path)
    losses = [loss for _, loss in stage_losses(tmp_path)["stage 3"]]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_a_lora_stage_exports_merged_weights(tiny_checkpoint, demo_corpus, tmp_path):
    stage = {3: StageConfig("III", ("projector", "llm"), 1e-3, max_steps=2, batch_size=4,
                            lora=LoraSettings(r=4, alpha=8))}  # fmt: skip
    final = run_stages(config_for(tiny_checkpoint, demo_corpus, stage), [3], tmp_path)
    after = weights(final)
    assert not any("lora" in k for k in after)
    assert changed_groups(weights(tiny_checkpoint), after) == {"projector", "llm"}
