"""The docs point only at what the repository has: every relative link and every
`../` path resolves to a file inside it, and every page of docs/ is linked from
the README or another page (a reference page nobody links is not found)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CLIMBING = re.compile(r"`(\.\./[^`\s]+)`")
EXTERNAL = ("http://", "https://", "mailto:", "#")


def targets(page: Path) -> list[tuple[str, Path]]:
    text = page.read_text()
    found = [m[1] for m in LINK.finditer(text) if not m[1].startswith(EXTERNAL)]
    found += [m[1] for m in CLIMBING.finditer(text)]
    return [(t, (page.parent / t.split("#")[0]).resolve()) for t in found]


def test_every_link_and_relative_path_stays_in_the_repository():
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in PAGES
        for target, path in targets(page)
        if ROOT not in path.parents or not path.exists()
    ]
    assert broken == []


def test_every_page_of_docs_is_linked():
    linked = {path for page in PAGES for _, path in targets(page)}
    orphans = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert orphans == []
