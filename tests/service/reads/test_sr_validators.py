"""The SR as DICOM's own tools read it: `dciodvfy` (Debian's dicom3tools) finds no
error and no warning in the object, and `dsrdump` (dcmtk) prints it as a report, one
item a line, the answer under Findings. `make dicom-tools` installs both."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from service.reads.sr import build_sr, source_header

ANSWER = "No acute abnormality. The lungs are clear."
STRUCTURED = json.dumps({"findings": ["No fracture.", "未见出血。"], "impression": "Normal study."})
# dcmtk 3.6.7's VR checker names a UTF-8 SR's character set as one it does not check:
# a limit of the tool, printed for every ISO_IR 192 object, not a finding about ours.
DCMTK_UTF8_NOTE = "W: The VR checker does not support this Specific Character Set: ISO_IR 192"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: `make dicom-tools` installs it"
    return path


def write_sr(tmp_path: Path, answer: str, names: tuple[str, ...] = ("CT_small.dcm",)) -> Path:
    sources = [source_header(Path(get_testdata_file(n)).read_bytes()) for n in names]
    for source in sources[1:]:
        source.StudyInstanceUID = sources[0].StudyInstanceUID  # series of one study
    built = build_sr(sources, "Any fracture?", answer, "gmai-vl-7b", "2.1")
    path = tmp_path / "sr.dcm"
    path.write_bytes(built.data)
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("answer", "names"),
    [
        (ANSWER, ("CT_small.dcm",)),
        (STRUCTURED, ("CT_small.dcm",)),
        ("未见急性异常。No acute abnormality.", ("CT_small.dcm",)),  # UTF-8
        (ANSWER, ("CT_small.dcm", "MR_small.dcm")),  # two series referenced
        ("", ("CT_small.dcm",)),  # an empty answer still makes a valid item
    ],
)
def test_dciodvfy_reports_no_error_and_no_warning(tmp_path, answer, names):
    result = run(tool("dciodvfy"), str(write_sr(tmp_path, answer, names)))
    output = result.stdout + result.stderr
    assert output.strip().splitlines() == ["ComprehensiveSR"], output


def test_dsrdump_reads_a_report_with_the_answer_under_findings(tmp_path):
    path = write_sr(tmp_path, ANSWER)
    result = run(tool("dsrdump"), "+Pl", "+Pc", "+Pt", str(path))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("<CONTAINER:"))
    tree = lines[start:]
    assert tree[0].startswith('<CONTAINER:(18748-4,LN,"Diagnostic Imaging Report")=SEPARATE')
    assert "TID 2000 (DCMR)" in tree[0]
    assert '<has obs context TEXT:(121013,DCM,"Device Observer Name")="gmai-vl-7b">' in tree
    notice = next(line for line in tree if '(121106,DCM,"Comment")' in line)
    assert "not for diagnostic use" in notice
    findings = tree.index('<contains CONTAINER:(59776-5,LN,"Findings")=CONTINUOUS>')
    assert tree[findings + 1] == f'<contains TEXT:(121071,DCM,"Finding")="{ANSWER}">'
    request = tree.index('<contains CONTAINER:(55115-0,LN,"Request")=SEPARATE>')
    assert tree[request + 1] == '<contains TEXT:(55115-0,LN,"Request")="Any fracture?">'


def test_dsrdump_reads_the_impression_of_a_structured_answer(tmp_path):
    path = write_sr(tmp_path, STRUCTURED)
    result = run(tool("dsrdump"), "+Pl", "+Pc", "+U8", str(path))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line != DCMTK_UTF8_NOTE] == []
    tree = [line.strip() for line in result.stdout.splitlines()]
    impressions = tree.index('<contains CONTAINER:(19005-8,LN,"Impressions")=SEPARATE>')
    assert tree[impressions + 1] == '<contains TEXT:(121073,DCM,"Impression")="Normal study.">'
    findings = tree.index('<contains CONTAINER:(59776-5,LN,"Findings")=SEPARATE>')
    assert tree[findings + 1] == '<contains TEXT:(121071,DCM,"Finding")="No fracture.">'
    assert '<contains TEXT:(121071,DCM,"Finding")="未见出血。">' in tree
