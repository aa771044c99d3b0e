from pathlib import Path

from service.cli import build_parser
from service.config import Settings
from service.queue.lanes import Lane


def test_settings_come_from_gmaivl_environment(monkeypatch):
    monkeypatch.setenv("GMAIVL_PORT", "9123")
    monkeypatch.setenv("GMAIVL_MODEL", "/models/gmai-vl-7b")
    monkeypatch.setenv("GMAIVL_DEFAULT_PRIORITY", "batch")
    monkeypatch.setenv("GMAIVL_IMAGE_MAX_IMAGES_PER_REQUEST", "2")
    settings = Settings()
    assert settings.port == 9123
    assert settings.model == Path("/models/gmai-vl-7b")
    assert settings.model_id() == "gmai-vl-7b"
    assert settings.default_priority is Lane.batch
    assert settings.images.max_images_per_request == 2


def test_served_model_name_wins():
    assert Settings(model=Path("/m/x"), served_model_name="gmai-vl").model_id() == "gmai-vl"


def test_cli_has_serve_and_the_training_commands():
    parser = build_parser()
    args = parser.parse_args(["serve", "--model", "/m", "--served-model-name", "n", "--port", "1"])
    assert (args.model, args.served_model_name, args.port) == (Path("/m"), "n", 1)
    args = parser.parse_args(["model", "init", "--out", "/tmp/o", "--seed", "3"])
    assert (args.preset, args.seed) == ("tiny", 3)
