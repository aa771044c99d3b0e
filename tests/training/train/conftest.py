"""Fixtures for the training tests: a small demo corpus, a run config over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.demo import DemoConfig, make_demo


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The procedural corpus, small: 8 training and 2 held-out studies per modality."""
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, DemoConfig(train_per_modality=8, heldout_per_modality=2), progress=False)
    return out
