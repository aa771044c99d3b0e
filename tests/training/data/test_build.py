"""`data build`: parallel sources, shards, manifest, mixture, bad files, resume, failures."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np

from tests.training.data.fixtures import grey, write_coco, write_png
from training.data.build import BuildConfig, build, load_build_config
from training.data.converters import SourceSpec
from training.data.mixture import read_annotations, read_mixture


def make_sources(root):
    write_png(root / "cls" / "NORM" / "a.png", grey(20, 20))
    write_png(root / "cls" / "TUM" / "b.png", grey(20, 20))
    (root / "cls" / "TUM" / "c.png").write_bytes(b"not a png")  # reported, skipped
    write_png(root / "seg" / "images" / "x.png", grey(32, 32))
    mask = np.zeros((32, 32), np.uint8)
    mask[20:30, 20:30] = 1
    write_png(root / "seg" / "masks" / "x.png", mask)
    write_coco(root / "det")
    (root / "vol" / "images").mkdir(parents=True)
    (root / "vol" / "masks").mkdir()
    volume, labels = np.zeros((8, 8, 4), np.float32), np.zeros((8, 8, 4), np.uint8)
    labels[1:3, 1:3, 1] = 1
    nib.save(nib.Nifti1Image(volume, np.eye(4)), root / "vol" / "images" / "v.nii")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), root / "vol" / "masks" / "v.nii")
    config = {
        "workers": 2,
        "shard_size": 4,
        "sources": [
            {"name": "crc", "kind": "classification", "root": "cls",
             "modality": "histopathology", "sample_ratio": 0.5},
            {"name": "seg", "kind": "segmentation", "root": "seg", "modality": "ct",
             "labels": {"1": "lesion"}, "languages": ["en", "zh"]},
            {"name": "det", "kind": "detection", "root": "det", "modality": "xray"},
            {"name": "vol", "kind": "volume", "root": "vol", "modality": "mri",
             "labels": {"1": "tumor"}},
        ],
    }  # fmt: skip
    (root / "build.json").write_text(json.dumps(config))
    return root / "build.json"


def test_build_writes_shards_manifest_mixture_and_reports_bad_files(tmp_path):
    config = load_build_config(make_sources(tmp_path))
    out = tmp_path / "out"
    manifest = build(config, out, progress=False)
    assert manifest["failed"] == {}
    assert manifest["bad_files"] == 1
    bad = [json.loads(line) for line in (out / "bad_files.jsonl").read_text().splitlines()]
    assert bad == [{"source": "crc", "item": '["TUM/c.png", "TUM"]',
                    "reason": "not a readable image (UnidentifiedImageError)"}]  # fmt: skip
    sources = manifest["sources"]
    assert sources["crc"]["records"] == 10  # 2 images x 5 records
    assert sources["seg"]["records"] > 0 and sources["det"]["records"] > 0
    assert sources["vol"]["modality"] == {"mri": sources["vol"]["records"]}
    assert manifest["records"] == sum(s["records"] for s in sources.values())
    assert sum(manifest["by_task"].values()) == manifest["records"]
    mixture = read_mixture(out / "example_list.json")
    assert set(mixture) == {"crc", "det", "seg", "vol"}
    assert mixture["crc"]["sample_ratio"] == 0.5 and mixture["crc"]["data_augment"] is False
    assert len(mixture["crc"]["annotations"]) == 3  # 10 records, 4 per shard
    for name, entry in mixture.items():
        records = [r for a in entry["annotations"] for r in read_annotations(a)]
        assert len(records) == entry["length"] == sources[name]["records"]
        for record in records:  # every image a record names exists where the mixture says
            assert (tmp_path / entry["image_dir"] / record["image"]).is_file()


def test_build_resumes_and_redoes_only_what_is_unfinished(tmp_path):
    config = load_build_config(make_sources(tmp_path))
    out = tmp_path / "out"
    config.workers = 1
    build(config, out, progress=False)
    marker = out / "done" / "det.json"
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "done").iterdir()}
    (out / "done" / "seg.json").unlink()  # as if interrupted while converting `seg`
    (out / "shards" / "seg" / "part-00001.jsonl").write_text("partial")
    second = build(config, out, progress=False)
    assert marker.stat().st_mtime_ns == stamps["det.json"]
    assert (out / "done" / "seg.json").stat().st_mtime_ns != stamps["seg.json"]
    assert second["sources"]["seg"]["records"] > 0
    assert all(
        json.loads(line)
        for shard in (out / "shards" / "seg").glob("part-*.jsonl")
        for line in shard.read_text().splitlines()
    )


def test_an_unreadable_source_fails_the_build_and_the_cli_says_so(tmp_path):
    (tmp_path / "fine" / "A").mkdir(parents=True)
    write_png(tmp_path / "fine" / "A" / "a.png", grey(8, 8))
    config = {"workers": 1, "sources": [
        {"name": "fine", "kind": "classification", "root": "fine", "modality": "xray"},
        {"name": "gone", "kind": "segmentation", "root": "nowhere", "modality": "ct",
         "labels": {"1": "x"}},
    ]}  # fmt: skip
    (tmp_path / "b.json").write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "data", "build", "--config", str(tmp_path / "b.json"),
         "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["records"] == 4 and "gone" in summary["failed"]
    assert "FileNotFoundError" in summary["failed"]["gone"]


def test_config_errors_are_reported_before_any_work(tmp_path):
    spec = SourceSpec(name="a", kind="classification", root=tmp_path, modality="ct")
    for bad in ([spec, spec], [SourceSpec(name="b", kind="ocr", root=tmp_path, modality="ct")]):
        try:
            BuildConfig(bad)
        except ValueError:
            continue
        raise AssertionError("config accepted")
