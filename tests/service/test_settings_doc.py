"""docs/settings.md is generated from service/config.py and kept current; every
setting is a flag of the commands that use it, or environment-only for a reason."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from service import cli
from service.config import Settings
from service.settings_cli import settings_from
from service.settings_doc import flags_by_setting, render

PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_the_settings_page_is_what_the_settings_say():
    assert PAGE.read_text() == render(), (
        "docs/settings.md is stale: run `make docs` (python -m service.settings_doc)"
    )


def test_every_setting_is_a_flag_or_environment_only_for_a_reason():
    flags = flags_by_setting()
    names = []
    for name, info in Settings.model_fields.items():
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel) and name not in cli.ENV_ONLY:
            names += [f"{name}.{field}" for field in group.model_fields]  # vllm.dtype: --dtype
        else:
            names.append(name)
    assert [n for n in names if n not in flags and n not in cli.ENV_ONLY] == []
    assert not set(cli.ENV_ONLY) & set(flags)
    for name in ("upstream_api_key", "webhook_secret"):  # secrets: never on a command line
        assert name in cli.ENV_ONLY


def test_the_queue_settings_have_flags_where_they_act():
    parser = cli.build_parser()
    args = "gateway --redis-url redis://r --queue-max-depth 7 --heartbeat-interval 0.5"
    gateway = settings_from(parser.parse_args([*args.split(), "--result-ttl=60", "--audit-log=-"]))
    assert (gateway.queue_max_depth, gateway.heartbeat_interval, gateway.result_ttl) == (7, 0.5, 60)
    assert gateway.audit_log == "-"
    args = "worker --redis-url redis://r --engine fake --aging-seconds 3"
    args += " --visibility-timeout 9 --max-deliveries 5 --heartbeat-interval 2"
    worker = settings_from(parser.parse_args(args.split()))
    assert (worker.aging_seconds, worker.visibility_timeout) == (3, 9)
    assert (worker.max_deliveries, worker.heartbeat_interval) == (5, 2)
    serve = settings_from(parser.parse_args(["serve", "--queue-max-depth", "9"]))
    assert serve.queue_max_depth == 9
