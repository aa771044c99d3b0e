"""`gmai-vl dicom-node --dry-run / --trigger`, the settings' names, and rules checked
before anything listens (`gmai-vl serve --dicom-port` with a bad rules file)."""

from __future__ import annotations

import os
import subprocess
import sys

from service.config import Settings
from service.dicom_node.spool import TRIGGERS, uid_hash
from tests.dicom_study import make_study

RULES = """
rules:
  - name: chest-ct
    match: {modality: CT, calling_ae: ED_CT}
    read: {model: m}
  - name: rest
    match: {}
    ignore: true
"""


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_settings_are_named_as_documented(monkeypatch, tmp_path):
    monkeypatch.setenv("GMAIVL_DICOM_AE_TITLE", "AIREAD")
    monkeypatch.setenv("GMAIVL_DICOM_PORT", "1104")
    monkeypatch.setenv("GMAIVL_DICOM_ALLOWED_CALLING_AETS", "PACS1, CT_ED ,")
    monkeypatch.setenv("GMAIVL_DICOM_RULES_FILE", str(tmp_path / "r.yaml"))
    monkeypatch.setenv("GMAIVL_DICOM_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("GMAIVL_DICOM_SPOOL_MAX_BYTES", "1000")
    monkeypatch.setenv("GMAIVL_DICOM_STUDY_QUIET_SECONDS", "7.5")
    dicom = Settings().dicom
    assert (dicom.ae_title, dicom.port) == ("AIREAD", 1104)
    assert dicom.allowed_calling_aets == ["PACS1", "CT_ED"]
    assert dicom.rules_file == tmp_path / "r.yaml" and dicom.spool_dir == tmp_path / "spool"
    assert (dicom.spool_max_bytes, dicom.study_quiet_seconds) == (1000, 7.5)
    monkeypatch.delenv("GMAIVL_DICOM_PORT")
    assert Settings().dicom.port is None  # serve: the node is off unless asked for


def test_dry_run_names_the_rule(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    study = make_study([("CT", 3), ("MR", 1)])
    folder = tmp_path / "study"
    folder.mkdir()
    for index, data in enumerate(study.files):
        (folder / f"{index}.dcm").write_bytes(data)
    done = cli("dicom-node", "--rules-file", str(rules), "--dry-run", str(folder),
               "--calling-ae", "ED_CT")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "rule chest-ct: read (3 instances in 1 series)"
    done = cli("dicom-node", "--rules-file", str(rules), "--dry-run", str(folder))
    assert done.stdout.strip() == "rule rest: ignored"


def test_a_bad_rules_file_stops_the_node_before_it_listens(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [{name: x, match: {modality: CT, colour: red}, read: {}}]")
    done = cli("dicom-node", "--rules-file", str(rules), "--dry-run", str(tmp_path))
    assert done.returncode == 2 and "colour" in done.stderr and "model" in done.stderr
    done = cli(
        "serve", "--engine", "fake", "--dicom-port", "0",
        env={"GMAIVL_DICOM_RULES_FILE": str(rules), "GMAIVL_AUTH": "off"},
    )  # fmt: skip
    assert done.returncode == 2 and "colour" in done.stderr


def test_trigger_writes_the_marker_the_node_reads(tmp_path):
    spool = tmp_path / "spool"
    done = cli("dicom-node", "--spool-dir", str(spool), "--trigger", "1.2.3")
    assert done.returncode == 0, done.stderr
    assert (spool / TRIGGERS / uid_hash("1.2.3")).exists()
