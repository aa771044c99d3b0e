"""docs/errors.md against the code: every error code the service can send, with its
HTTP status and type, is one row of its table, and the table names no other.

The codes are found where they are made: each class of the error tree
(service/errors.py) with its own code, the codes workers send across the queue,
the tenant limits' codes, and every `code="..."` given where an error is raised
in service/ (read from the source, so a new code without a row fails here).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from service import errors
from service.security.limits import LIMIT_NAMES

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "errors.md"
ROW = re.compile(r"^\| `([a-z0-9_]+)` \| (\d{3}) \| `([a-z_]+)` \| .+ \|$")
TREE = {cls.__name__: cls for cls in errors._classes(errors.ServiceError)}


def raised() -> list[tuple[str, int, type[errors.ServiceError], str | None]]:
    """(file, line, class, code) of every error constructed in service/."""
    found = []
    for path in sorted((ROOT / "service").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in TREE:
                continue
            code = TREE[name].code
            for keyword in node.keywords:
                if keyword.arg == "code":
                    value = keyword.value
                    literal = isinstance(value, ast.Constant) and isinstance(value.value, str)
                    code = value.value if literal else "<computed>"
            found.append((str(path.relative_to(ROOT)), node.lineno, TREE[name], code))
    return found


def codes_in_the_code() -> set[tuple[str, int, str]]:
    rows = {(c.code, c.status_code, c.type) for c in TREE.values() if c.code is not None}
    rows |= {(code, cls.status_code, cls.type) for code, cls in errors._WORKER_CODES.items()}
    tenant = errors.TenantLimitExceeded
    rows |= {(f"tenant_{name}", tenant.status_code, tenant.type) for name in LIMIT_NAMES}
    for _, _, cls, code in raised():
        if code not in (None, "<computed>"):
            rows.add((code, cls.status_code, cls.type))
    return rows


def codes_in_the_page() -> set[tuple[str, int, str]]:
    rows = set()
    for line in PAGE.read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows.add((match[1], int(match[2]), match[3]))
    return rows


def test_every_error_code_is_on_the_page_with_its_status_and_type():
    code, page = codes_in_the_code(), codes_in_the_page()
    assert sorted(code - page) == [], "rows missing from docs/errors.md"
    assert sorted(page - code) == [], "rows of docs/errors.md no code sends"


def test_every_error_raised_names_a_code():
    """A client can tell errors apart by `code`; only a bug's 500 has none."""
    nameless = [
        f"{file}:{line}"
        for file, line, cls, code in raised()
        if code is None and cls is not errors.ServiceError
    ]
    assert nameless == []
    # A computed code would escape the table; errors.py's own is `error_for_code`, which
    # rebuilds an error from a code that crossed the queue (found where it was made).
    computed = [
        f"{file}:{line}"
        for file, line, _, code in raised()
        if code == "<computed>" and file != "service/errors.py"
    ]
    assert computed == []
