"""The DICOM node's throughput (docs/benchmarks.md): instances per second received
(512x512 CT, Explicit VR Little Endian, ~0.5 MB each) over 1 and 4 associations,
and the time from the last instance's C-STORE response to the SR found in the
PACS (Orthanc over QIDO-RS), with the fake engine and the tiny real model.

    PYTHONPATH=. python loadtest/bench_dicom_node.py [--instances 200] [--out FILE.json]

Everything runs on this machine: Orthanc (DIMSE on), the node (`gmai-vl serve
--dicom-port`), and the sending SCUs, so the sender's CPU is counted against the
node's. The quiet period is part of "last instance to SR"; the table also shows
the time after it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dicom_node import QUIET, Node, scu_store, wait_sr  # noqa: E402
from tests.dicom_study import make_study  # noqa: E402
from tests.orthanc import OrthancServer  # noqa: E402


def receive_rate(node: Node, instances: int, associations: int) -> dict[str, float]:
    study = make_study([("CT", instances)], size=512)
    chunks = [study.files[i::associations] for i in range(associations)]
    statuses: list[int] = []
    start = time.perf_counter()
    threads = [
        threading.Thread(target=lambda c=c: statuses.extend(scu_store(node.dicom_port, c)))
        for c in chunks
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    assert statuses.count(0) == instances, "not every instance was stored"
    megabytes = sum(len(f) for f in study.files) / 1e6
    return {
        "associations": associations,
        "instances": instances,
        "seconds": round(elapsed, 2),
        "instances_per_s": round(instances / elapsed, 1),
        "mb_per_s": round(megabytes / elapsed, 1),
    }


def last_instance_to_sr(node: Node, pacs: OrthancServer, rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        study = make_study([("CT", 10), ("CT", 10)], size=512)
        for data in study.files:
            pacs.upload(data)
        before = len(node.read_ids())
        scu_store(node.dicom_port, study.files)
        last = time.perf_counter()
        wait_sr(pacs, study.study_instance_uid, timeout=300)
        times.append(time.perf_counter() - last)
        node.wait_reads(before + 1, timeout=60)
    median = statistics.median(times)
    return {
        "rounds": rounds,
        "median_s": round(median, 2),
        "max_s": round(max(times), 2),
        "median_after_quiet_period_s": round(median - QUIET, 2),
    }


def tiny_checkpoint(out: Path) -> Path:
    command = ["model", "init", "--preset", "tiny", "--out", str(out), "--seed", "0"]
    subprocess.run([sys.executable, "-m", "service.cli", *command], check=True,
                   capture_output=True)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pacs = OrthancServer(work / "orthanc", dicom=True)
        (work / "orthanc").mkdir()
        pacs.start()
        try:
            (work / "fake").mkdir()
            node = Node(work / "fake", pacs).start()
            try:
                results["receive"] = [
                    receive_rate(node, args.instances, 1),
                    receive_rate(node, args.instances, 4),
                ]
                results["to_sr_fake"] = last_instance_to_sr(node, pacs, args.rounds)
            finally:
                node.stop()
            (work / "tiny").mkdir()
            checkpoint = tiny_checkpoint(work / "ckpt")
            flags = ("--model", str(checkpoint), "--served-model-name", "tiny")
            node = Node(work / "tiny", pacs, serve_flags=flags, model="tiny").start()
            try:
                results["to_sr_tiny"] = last_instance_to_sr(node, pacs, args.rounds)
            finally:
                node.stop()
        finally:
            pacs.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
