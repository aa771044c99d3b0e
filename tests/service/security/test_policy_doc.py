"""The docs name tenant policy fields as the key file spells them: a key file
written from a page must load (`allowed_models` once stood where `models` is)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from service.security.policy import TenantPolicy

DOCS = Path(__file__).resolve().parents[3] / "docs"
FIELDS = {f.name for f in dataclasses.fields(TenantPolicy)}


def test_the_policy_table_is_the_policy():
    text = (DOCS / "security.md").read_text().split("| policy field |", 1)[1]
    rows = re.findall(r"^\| `([a-z_]+)` \|", text.split("\n\n", 1)[0], re.MULTILINE)
    assert set(rows) == FIELDS


def test_every_page_names_policy_fields_that_exist():
    named = {
        (page.name, field)
        for page in DOCS.glob("*.md")
        for mention in re.findall(r"[Tt]enant polic(?:y|ies) \(([^)]*)\)", page.read_text())
        for field in re.findall(r"`([a-z_]+)`", mention)
    }
    assert named and {(page, f) for page, f in named if f not in FIELDS} == set()
