from pathlib import Path

import pytest

from service.cli import build_parser
from service.config import Settings
from service.core.lanes import Lane


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


def test_pacs_entries_from_env_and_file(monkeypatch, tmp_path):
    import json

    monkeypatch.setenv(
        "GMAIVL_PACS", json.dumps([{"name": "a", "base_url": "http://10.0.0.5/dicom-web"}])
    )
    secrets_file = tmp_path / "pacs.json"
    secrets_file.write_text(
        json.dumps(
            [
                {
                    "name": "b",
                    "base_url": "https://pacs.example/wado",
                    "username": "u",
                    "password": "pw",
                }
            ]
        )
    )
    monkeypatch.setenv("GMAIVL_PACS_FILE", str(secrets_file))
    monkeypatch.setenv("GMAIVL_FETCH_ALLOWED_HOSTS", '["images.example"]')
    settings = Settings()
    entries = settings.pacs_entries()
    assert [e.name for e in entries] == ["a", "b"]
    assert entries[1].password.get_secret_value() == "pw"
    assert "pw" not in repr(settings)  # credentials never in a repr (logs, tracebacks)
    assert settings.fetch.allowed_hosts == ["images.example"]


def test_flags_are_derived_from_settings_with_their_descriptions(monkeypatch):
    from service.settings_cli import settings_from

    monkeypatch.setenv("GMAIVL_PORT", "9000")
    monkeypatch.setenv("GMAIVL_VLLM_MAX_MODEL_LEN", "512")
    parser = build_parser()
    args = parser.parse_args(
        ["serve", "--engine", "vllm", "--dtype", "float32", "--enforce-eager", "--host", "0.0.0.0"]
    )
    settings = settings_from(args)
    assert (settings.engine, settings.host, settings.port) == ("vllm", "0.0.0.0", 9000)
    assert (settings.vllm.dtype, settings.vllm.enforce_eager) == ("float32", True)
    assert settings.vllm.max_model_len == 512  # the environment still fills the group
    serve = parser._subparsers._group_actions[0].choices["serve"]
    for action in serve._actions:
        if action.dest != "help":
            assert action.help, f"--{action.dest} has no description in Settings"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--engine", "unknown"])  # choices come from the Literal
