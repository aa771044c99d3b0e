"""`gmai-vl data demo`: synthetic studies converted by the real converters; every answer
agrees with the lesion mask the generator drew."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from training.data.demo_images import MODALITIES
from training.data.facts import mask_facts
from training.data.mixture import read_mixture
from training.data.templates import MODALITY_NAMES
from training.train.heldout import is_correct


def expected_facts(split_dir, image):
    mask = np.asarray(Image.open(split_dir / image.replace("/images/", "/masks/")))
    facts = mask_facts(mask, {1: "lesion"})
    return facts[0] if facts else None


def test_demo_corpus_answers_match_the_masks(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "data", "demo", "--out", str(out),
         "--train-per-modality", "6", "--heldout-per-modality", "3", "--no-progress"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(counts["heldout"]) == {"modality", "presence", "location"}
    assert counts["heldout"]["modality"] == counts["heldout"]["presence"] == 15
    for split in ("train", "heldout"):
        records = json.loads((out / split / "annotations.json").read_text())
        assert {r["modality"] for r in records} == set(MODALITIES)
        for record in records:
            assert (out / split / record["image"]).is_file()
            facts = expected_facts(out / split, record["image"])
            answer = record["conversations"][1]["value"]
            qtype = record["question_type"]
            if qtype == "modality":
                name = MODALITY_NAMES[record["modality"]]["en"]
                assert is_correct("modality", f"It is {name}.", answer), answer
            elif qtype == "presence":
                assert answer.lower().startswith("yes" if facts else "no"), answer
            elif qtype == "location":
                assert facts is not None and len(facts.locations) == 1
                assert is_correct("location", facts.locations[0], answer), answer
    mixture = read_mixture(out / "example_list.json")
    assert mixture["demo"]["length"] == sum(counts["train"].values())
    assert mixture["demo"]["image_dir"] == str((out / "train").resolve())
    vqa = json.loads((out / "heldout" / "vqa.json").read_text())
    assert len(vqa) == sum(counts["heldout"].values())
    assert {v["answer_type"] for v in vqa} == {"OPEN", "CLOSED"}
