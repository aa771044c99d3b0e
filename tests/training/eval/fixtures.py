"""Small benchmark files written in each published layout, with real PNG images."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image


def png(color: tuple[int, int, int] = (120, 120, 120), size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


MCQ_ROWS = [
    # index, question, A, B, C, D, answer, category, modality, hint
    ("1", "Which organ is shown?", "Liver", "Kidney", "Lung", "Heart", "C", "organ", "CT", ""),
    (
        "2",
        "What modality is this?",
        "MRI",
        "CT",
        "X-ray",
        "",
        "A",
        "modality",
        "MRI",
        "Look at the contrast.",
    ),
    ("3", "Is there a fracture?", "Yes", "No", "", "", "B", "abnormality", "X-ray", ""),
    (
        "4",
        "Which lesion type?",
        "Benign",
        "Malignant",
        "Normal",
        "Artifact",
        "B",
        "abnormality",
        "CT",
        "",
    ),
    (
        "5",
        "Which side is the effusion?",
        "Left",
        "Right",
        "Both",
        "None",
        "A",
        "abnormality",
        "X-ray",
        "",
    ),
]


def write_mcq_tsv(path: Path) -> Path:
    """VLMEvalKit layout; row 3 reuses row 1's image by index, as VLMEvalKit does."""
    image = base64.b64encode(png()).decode()
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(
            [
                "index",
                "question",
                "hint",
                "A",
                "B",
                "C",
                "D",
                "answer",
                "category",
                "modality",
                "image",
            ]
        )
        for index, q, a, b, c, d, answer, category, modality, hint in MCQ_ROWS:
            writer.writerow(
                [
                    index,
                    q,
                    hint,
                    a,
                    b,
                    c,
                    d,
                    answer,
                    category,
                    modality,
                    "1" if index == "3" else image,
                ]
            )
    return path


def write_vqa_rad(folder: Path) -> Path:
    (folder / "VQA_RAD Image Folder").mkdir(parents=True, exist_ok=True)
    (folder / "VQA_RAD Image Folder" / "synpic1.jpg").write_bytes(png())
    records = [
        {
            "qid": 1,
            "image_name": "synpic1.jpg",
            "image_organ": "CHEST",
            "answer": "Yes",
            "answer_type": "CLOSED",
            "question_type": "PRES",
            "question": "Is there effusion?",
            "phrase_type": "freeform",
        },
        {
            "qid": 2,
            "image_name": "synpic1.jpg",
            "image_organ": "CHEST",
            "answer": "right lung",
            "answer_type": "OPEN",
            "question_type": "POS",
            "question": "Where is the mass?",
            "phrase_type": "freeform",
        },
    ]
    path = folder / "VQA_RAD Dataset Public.json"
    path.write_text(json.dumps(records))
    return path


def write_slake(folder: Path) -> Path:
    (folder / "imgs" / "xmlab1").mkdir(parents=True, exist_ok=True)
    (folder / "imgs" / "xmlab1" / "source.jpg").write_bytes(png())
    records = [
        {
            "img_id": 1,
            "img_name": "xmlab1/source.jpg",
            "question": "Which organ is abnormal?",
            "answer": "Lung",
            "q_lang": "en",
            "location": "Chest",
            "modality": "CT",
            "answer_type": "OPEN",
            "base_type": "vqa",
            "content_type": "Organ",
            "qid": 11,
        },
        {
            "img_id": 1,
            "img_name": "xmlab1/source.jpg",
            "question": "Is this a CT?",
            "answer": "Yes",
            "q_lang": "en",
            "location": "Chest",
            "modality": "CT",
            "answer_type": "CLOSED",
            "base_type": "vqa",
            "content_type": "Modality",
            "qid": 12,
        },
    ]
    path = folder / "test.json"
    path.write_text(json.dumps(records))
    return path


def write_pathvqa(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "images" / "test_0001.jpg").write_bytes(png())
    records = [
        {
            "id": "p1",
            "image": "test_0001.jpg",
            "question": "Is this tissue necrotic?",
            "answer": "no",
        },
        {
            "id": "p2",
            "image": "test_0001.jpg",
            "question": "What is present?",
            "answer": "granulomas",
        },
    ]
    path = folder / "pathvqa_test.json"
    path.write_text(json.dumps(records))
    return path
