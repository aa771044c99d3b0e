"""Routing rules: validation at load (every problem at once), first match wins,
series-level conditions select instances, non-image instances are never read."""

from __future__ import annotations

import pytest

from service.dicom_node.rules import (
    InstanceFacts,
    RulesError,
    StudyFacts,
    decide,
    load_rules,
)

RULES = """
rules:
  - name: ed-chest-ct
    match: {calling_ae: [ED_CT, ORTHANC], modality: CT, body_part: chest,
            study_description: "(?i)chest"}
    read: {model: tiny, prompt: "Findings?", priority: stat, tenant: radiology, max_images: 2}
    send_to: {ae_title: PACS, host: 127.0.0.1, port: 104}
  - name: mr-by-class
    match: {sop_class: MRImageStorage, series_description: "^T2"}
    read: {model: tiny, json_schema: {name: finding, schema: {type: object}}}
    send_to: {pacs: main}
  - name: rest
    match: {}
    ignore: true
"""


def write(tmp_path, text):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def inst(modality="CT", series="1.1", desc="", sop="1.2.840.10008.5.1.4.1.1.2", image=True):
    return InstanceFacts(sop, "9." + series, series, modality, "CHEST", desc, 1, 1, None, image)


def study(*instances, aes=("ORTHANC",), desc="CHEST CT"):
    return StudyFacts("1.2.3", desc, aes, instances)


def test_first_match_wins_and_selects_matching_instances(tmp_path):
    rules = load_rules(write(tmp_path, RULES))
    mr = inst("MR", "2.2", "T2 axial", "1.2.840.10008.5.1.4.1.1.4")
    decision = decide(rules, study(inst(), mr))
    assert decision.rule.name == "ed-chest-ct" and decision.reads
    assert [i.series_instance_uid for i in decision.instances] == ["1.1"]
    assert decision.rule.read.priority.value == "stat"
    # another calling AE: the CT rule does not match; the MR rule does
    decision = decide(rules, study(inst(), mr, aes=("OTHER",)))
    assert decision.rule.name == "mr-by-class"
    assert [i.modality for i in decision.instances] == ["MR"]
    assert decision.rule.read.response_format()["json_schema"]["name"] == "finding"
    # nothing specific: the catch-all ignores it
    decision = decide(rules, study(inst("US"), aes=("OTHER",)))
    assert decision.rule.name == "rest" and not decision.reads
    assert decision.describe() == "rule rest: ignored"


def test_non_image_instances_are_never_read(tmp_path):
    rules = load_rules(write(tmp_path, "rules: [{name: all, match: {}, read: {model: m}}]"))
    sr = inst("SR", "3.3", sop="1.2.840.10008.5.1.4.1.1.88.33", image=False)
    decision = decide(rules, study(sr))
    assert decision.rule is None and decision.no_images and not decision.reads
    assert "no image instances" in decision.describe()
    assert decide(load_rules(None), study(inst())).describe() == "no rule matches: not read"


def test_every_problem_is_reported_at_load(tmp_path):
    bad = """
rules:
  - name: a
    match: {modality: CT, study_description: "([unclosed", colour: red}
    read: {model: m, priority: soon}
  - name: a
    match: {sop_class: NoSuchStorage}
    ignore: true
    send_to: {pacs: x}
"""
    with pytest.raises(RulesError) as caught:
        load_rules(write(tmp_path, bad))
    text = str(caught.value)
    for fragment in ("study_description", "colour", "priority", "NoSuchStorage"):
        assert fragment in text, fragment
    with pytest.raises(RulesError, match="ignore rule sends nothing"):
        load_rules(write(tmp_path, "rules: [{name: a, ignore: true, send_to: {pacs: x}}]"))
    with pytest.raises(RulesError, match="either `read` or `ignore"):
        load_rules(write(tmp_path, "rules: [{name: a, match: {}}]"))
    with pytest.raises(RulesError, match="repeat"):
        load_rules(write(tmp_path, "rules: [{name: a, ignore: true}, {name: a, ignore: true}]"))
    with pytest.raises(RulesError, match="not YAML"):
        load_rules(write(tmp_path, "rules: [unclosed"))
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


def test_tenants_and_pacs_are_checked_against_the_server(tmp_path):
    rules = load_rules(write(tmp_path, RULES))
    assert rules.problems(tenants=None, pacs={"main"}) == []  # keys off: any tenant
    problems = rules.problems(tenants={"other"}, pacs=set())
    assert any("tenant 'radiology'" in p for p in problems)
    assert any("no PACS named 'main'" in p for p in problems)
