"""`gmai-vl data demo`: a procedural demo corpus, converted by the real converters.

    D/train/<modality>-demo/{images,masks}/NNNNN.png   synthetic studies and lesion masks
    D/heldout/<modality>-demo/...                       the same, other seeds
    D/build/{train,heldout}/                            `data build` outputs (shards, manifest)
    D/train/annotations.json                            LLaVA JSON list, image paths under D/train
    D/heldout/annotations.json                          held-out questions: modality, lesion
                                                        presence (yes/no), lesion location
    D/heldout/vqa.json                                  the same in the eval harness's VQA JSON
    D/example_list.json                                 the training mixture (GMAI-VL format)

Every study is a segmentation source item (image + mask PNG, label 1 = "lesion"),
so each answer comes out of the same mask-to-facts path a real dataset takes.
Corpus sizes per preset are part of the demo recipe (training/demo_recipe.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from training.data.build import BuildConfig, build
from training.data.converters import SourceSpec
from training.data.demo_images import MODALITIES, QUADRANT_CENTRES, synth_image
from training.data.mixture import read_annotations, read_mixture, write_mixture
from training.demo_recipe import DemoConfig

HELDOUT_TYPES = ("modality", "presence", "location")
SPLITS = ("train", "heldout")


def write_split(out: Path, split: str, count: int, config: DemoConfig, progress: bool) -> None:
    seed = config.seed * 2 + SPLITS.index(split)  # held-out images never repeat training ones
    rng = np.random.default_rng(seed)
    from PIL import Image

    quadrants = list(QUADRANT_CENTRES)
    bar = tqdm(total=count * len(MODALITIES), desc=f"demo {split}", disable=not progress)
    for modality in MODALITIES:
        root = out / split / f"{modality}-demo"
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            where = quadrants[rng.integers(4)] if rng.random() < config.lesion_rate else None
            image, mask = synth_image(modality, where, config.image_size, rng)
            Image.fromarray(image).save(root / "images" / f"{i:05d}.png")
            Image.fromarray(mask).save(root / "masks" / f"{i:05d}.png")
            bar.update()
    bar.close()


def split_sources(out: Path, split: str) -> list[SourceSpec]:
    return [
        SourceSpec(
            name=f"{modality}-demo",
            kind="segmentation",
            root=out / split / f"{modality}-demo",
            modality=modality,
            labels={1: "lesion"},
            seed=SPLITS.index(split),
        )
        for modality in MODALITIES
    ]


def collect(mixture_path: Path, split_root: Path) -> list[dict[str, Any]]:
    """All records of a build, with image paths made relative to the split folder."""
    records = []
    for entry in read_mixture(mixture_path).values():
        prefix = Path(entry["image_dir"]).resolve().relative_to(split_root.resolve())
        for shard in entry["annotations"]:
            for record in read_annotations(Path(shard)):
                record["image"] = (prefix / record["image"]).as_posix()
                records.append(record)
    return records


def vqa_items(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Held-out records in the eval harness's PathVQA-style JSON (`gmai-vl eval`)."""
    return [
        {
            "image": r["image"],
            "question": r["conversations"][0]["value"].split("\n", 1)[1],
            "answer": r["conversations"][1]["value"],
            "answer_type": "CLOSED" if r["question_type"] == "presence" else "OPEN",
            "question_type": r["question_type"],
            "modality": r["modality"],
        }
        for r in records
    ]


def make_demo(out: Path, config: DemoConfig | None = None, progress: bool = True) -> dict:
    """Write the demo corpus under `out` (default: the `demo` preset's size); returns the
    counts per split and question type."""
    config = config or DemoConfig()
    write_split(out, "train", config.train_per_modality, config, progress)
    write_split(out, "heldout", config.heldout_per_modality, config, progress)
    counts = {}
    for split in SPLITS:
        build_dir = out / "build" / split
        manifest = build(BuildConfig(split_sources(out, split), workers=1), build_dir, progress)
        if manifest["failed"] or manifest["bad_files"]:
            raise RuntimeError(f"demo build of {split} reported problems: {manifest['failed']}")
        records = collect(build_dir / "example_list.json", out / split)
        if split == "heldout":
            records = [r for r in records if r["question_type"] in HELDOUT_TYPES]
            (out / split / "vqa.json").write_text(json.dumps(vqa_items(records), indent=1))
        (out / split / "annotations.json").write_text(json.dumps(records, ensure_ascii=False))
        counts[split] = {
            t: sum(1 for r in records if r["question_type"] == t)
            for t in sorted({r["question_type"] for r in records})
        }
    write_mixture(
        out / "example_list.json",
        {
            "demo": (
                out / "train",
                [out / "train" / "annotations.json"],
                sum(counts["train"].values()),
            )
        },
        {"demo": 1.0},
    )
    return counts
