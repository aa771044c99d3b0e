"""The load test, headless and bounded (5 s, loopback), against the embedded server:
every traffic class gets answers, and the CSV and HTML reports are written."""

from __future__ import annotations

from loadtest import run

EXPECTED = {
    "pacs routine dicom",
    "pacs routine png",
    "batch eval",
    "sdk chat stream",
    "sdk time to first token",
}


def test_smoke_load_run_writes_csv_and_html(served_fake, tmp_path, capsys):
    # 12 users: 6 PACS viewers do ~20 tasks in 5 s, so each of their classes (png is 3 in
    # 10) is all but sure to come up (with 6 users, ~10 tasks: a 3 % chance it did not)
    flags = ["--users", "12", "--spawn-rate", "12", "--duration", "5s", "--out", str(tmp_path)]
    code = run.main(["--host", served_fake, *flags])
    assert code == 0
    rows = {row["Name"]: row for row in run.summary(tmp_path)}
    assert set(rows) >= EXPECTED, sorted(rows)
    for name in EXPECTED:
        assert int(rows[name]["Request Count"]) >= 1, name
        assert int(rows[name]["Failure Count"]) == 0, name
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "locust" in html.lower() and "pacs routine dicom" in html
    assert "report.html" in capsys.readouterr().out
