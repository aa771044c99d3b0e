# ruff: noqa: RUF001  (the Chinese bank uses full-width punctuation on purpose)
"""Template banks (English and Chinese) that turn label facts into questions and answers.

Task families follow the paper: captions, perception (classification and
segmentation-derived facts) and instruction VQA (open, yes/no, multiple
choice). Every answer is filled from the labels; a template only chooses words.
English modality questions always contain "modality", presence questions
name the structure, location questions begin with "Where" (the held-out
scoring relies on this, docs/training.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from training.data.facts import QUADRANTS, StructureFacts

LANGS = ("en", "zh")

MODALITY_NAMES: dict[str, dict[str, str]] = {
    "ct": {"en": "CT", "zh": "CT"},
    "mri": {"en": "MRI", "zh": "磁共振"},
    "xray": {"en": "X-ray", "zh": "X光"},
    "fundus": {"en": "fundus photography", "zh": "眼底照相"},
    "histopathology": {"en": "histopathology", "zh": "组织病理"},
    "dermoscopy": {"en": "dermoscopy", "zh": "皮肤镜"},
    "ultrasound": {"en": "ultrasound", "zh": "超声"},
    "endoscopy": {"en": "endoscopy", "zh": "内窥镜"},
    "pet": {"en": "PET", "zh": "PET"},
}
QUADRANT_ZH = dict(zip(QUADRANTS, ("左上", "右上", "左下", "右下"), strict=True))
SIZE_ZH = {"small": "较小", "medium": "中等", "large": "较大"}
LETTERS = "ABCD"


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    task: str
    question_type: str


def modality_name(modality: str, lang: str) -> str:
    return MODALITY_NAMES.get(modality, {}).get(lang, modality)


# (question, answer) pairs per family and language; `{...}` fields come from labels.
BANK: dict[str, dict[str, list[tuple[str, str]]]] = {
    "en": {
        "modality": [
            ("What is the imaging modality of this image?", "This is a {modality} image."),
            ("Which modality was used to acquire this image?", "The modality is {modality}."),
            ("Name the modality of this scan.", "{modality}."),
        ],
        "presence_yes": [
            ("Is there a {name} in this image?", "Yes, there is a {name}."),
            ("Does this image show any {name}?", "Yes, a {name} is visible."),
            ("Can you see a {name} here?", "Yes."),
        ],
        "presence_no": [
            ("Is there a {name} in this image?", "No, there is no {name}."),
            ("Does this image show any {name}?", "No, no {name} is visible."),
            ("Can you see a {name} here?", "No."),
        ],
        "location": [
            ("Where is the {name} located?", "The {name} is in the {where}."),
            ("Where is the {name} in this image?", "It is in the {where}."),
            ("Where can the {name} be found?", "In the {where}."),
        ],
        "count": [
            ("How many {name} regions are there?", "There are {count}."),
            ("Count the {name} regions in this image.", "{count}."),
        ],
        "size": [
            ("How large is the {name}?", "The {name} is {size}, about {percent}% of the image."),
            ("What is the size of the {name}?", "{size}, covering about {percent}% of the image."),
        ],
        "structures": [
            ("Which of these structures are present: {names}?", "{present}."),
            ("Segment the image: which of {names} appear?", "{present}."),
        ],
        "caption_with": [
            ("Describe this image.", "A {modality} image showing {findings}."),
            ("Write a short caption for this image.", "{modality} image with {findings}."),
        ],
        "caption_without": [
            ("Describe this image.", "A {modality} image with no visible {names}."),
            ("Write a short caption for this image.", "{modality} image; no {names} seen."),
        ],
        "class": [
            ("What category does this image belong to?", "{label}."),
            ("Classify this image.", "This image shows {label}."),
        ],
        "class_yes": [("Does this image show {candidate}?", "Yes, it shows {label}.")],
        "class_no": [("Does this image show {candidate}?", "No, it shows {label}.")],
        "mcq": [("{question}\n{options}\nAnswer with the option's letter.", "{letter}. {text}")],
        "class_caption": [
            ("Describe this image.", "A {modality} image of {label}."),
            ("Write a short caption for this image.", "{modality} image showing {label}."),
        ],
        "body_part": [
            ("Which body part does this image show?", "The {body_part}."),
            ("What part of the body was examined?", "The {body_part} was examined."),
        ],
        "study_caption": [
            ("Describe this image.", "A {modality} image of the {body_part}."),
            ("Write a short caption for this image.", "{modality} of the {body_part}."),
        ],
    },
    "zh": {
        "modality": [("这张图像的成像方式是什么？", "这是一张{modality}图像。")],
        "presence_yes": [("图像中有{name}吗？", "有，图像中可见{name}。")],
        "presence_no": [("图像中有{name}吗？", "没有，图像中没有{name}。")],
        "location": [("{name}位于图像的哪个位置？", "{name}位于{where}。")],
        "count": [("图像中有几处{name}？", "共有{count}处。")],
        "size": [("{name}有多大？", "{name}{size}，约占图像的{percent}%。")],
        "structures": [("以下结构中哪些出现在图像中：{names}？", "{present}。")],
        "caption_with": [("描述这张图像。", "一张{modality}图像，可见{findings}。")],
        "caption_without": [("描述这张图像。", "一张{modality}图像，未见{names}。")],
        "class": [("这张图像属于哪一类？", "{label}。")],
        "class_yes": [("这张图像显示的是{candidate}吗？", "是的，显示的是{label}。")],
        "class_no": [("这张图像显示的是{candidate}吗？", "不是，显示的是{label}。")],
        "mcq": [("{question}\n{options}\n请回答选项字母。", "{letter}. {text}")],
        "class_caption": [("描述这张图像。", "一张{modality}图像，显示{label}。")],
        "body_part": [("这张图像显示的是哪个部位？", "{body_part}。")],
        "study_caption": [("描述这张图像。", "一张{body_part}的{modality}图像。")],
    },
}
NONE_PRESENT = {"en": "None of them", "zh": "均未出现"}
LIST_SEP = {"en": ", ", "zh": "、"}
AND = {"en": " and ", "zh": "和"}


def _pick(rng: random.Random, lang: str, family: str) -> tuple[str, str]:
    return rng.choice(BANK[lang][family])


def _qa(rng: random.Random, lang: str, family: str, task: str, qtype: str, **fields) -> QA:
    question, answer = _pick(rng, lang, family)
    text = answer.format(**fields)
    return QA(question.format(**fields), text[:1].upper() + text[1:], task, qtype)


def _join(items: list[str], lang: str) -> str:
    if len(items) <= 1:
        return "".join(items)
    return LIST_SEP[lang].join(items[:-1]) + AND[lang] + items[-1]


def _where(facts: StructureFacts, lang: str) -> str:
    places = [QUADRANT_ZH[q] if lang == "zh" else q for q in facts.locations]
    return _join(places, lang)


def _finding(facts: StructureFacts, lang: str) -> str:
    if lang == "zh":
        return f"{_where(facts, lang)}{SIZE_ZH[facts.size]}的{facts.name}"
    return f"a {facts.size} {facts.name} in the {_where(facts, lang)}"


def _mcq(rng: random.Random, lang: str, qtype: str, question: str, right: str, pool: list[str]):
    wrong = [p for p in pool if p != right]
    options = [right, *rng.sample(wrong, min(len(wrong), len(LETTERS) - 1))]
    rng.shuffle(options)
    letter = LETTERS[options.index(right)]
    lines = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))
    return _qa(
        rng, lang, "mcq", "vqa", qtype, question=question, options=lines, letter=letter, text=right
    )


def structure_qas(
    modality: str, facts: list[StructureFacts], names: list[str], rng: random.Random, lang: str
) -> list[QA]:
    """Caption, perception and VQA from segmentation- or detection-derived facts.

    `names` are all structures the source labels, so absent ones get a "no".
    """
    mod = modality_name(modality, lang)
    present = {f.name: f for f in facts}
    all_names = _join(names, lang)
    qas = [_qa(rng, lang, "modality", "vqa", "modality", modality=mod)]
    if facts:
        findings = _join([_finding(f, lang) for f in facts], lang)
        qas.append(
            _qa(rng, lang, "caption_with", "caption", "caption", modality=mod, findings=findings)
        )
    else:
        qas.append(
            _qa(rng, lang, "caption_without", "caption", "caption", modality=mod, names=all_names)
        )
    listed = _join([n for n in names if n in present], lang) or NONE_PRESENT[lang]
    qas.append(
        _qa(rng, lang, "structures", "perception", "structures", names=all_names, present=listed)
    )
    for name in names:
        if name not in present:
            qas.append(_qa(rng, lang, "presence_no", "vqa", "presence", name=name))
            continue
        f = present[name]
        qas.append(_qa(rng, lang, "presence_yes", "vqa", "presence", name=name))
        qas.append(_qa(rng, lang, "location", "vqa", "location", name=name, where=_where(f, lang)))
        qas.append(_qa(rng, lang, "count", "perception", "count", name=name, count=f.count))
        size = SIZE_ZH[f.size] if lang == "zh" else f.size
        qas.append(
            _qa(
                rng,
                lang,
                "size",
                "perception",
                "size",
                name=name,
                size=size,
                percent=max(1, round(f.fraction * 100)),
            )
        )
        if len(f.locations) == 1 and lang == "en":
            qas.append(
                _mcq(
                    rng,
                    lang,
                    "location_mcq",
                    f"Where is the {name}?",
                    f.locations[0],
                    list(QUADRANTS),
                )
            )
    return qas


def classification_qas(
    modality: str, label: str, classes: list[str], rng: random.Random, lang: str
) -> list[QA]:
    """Caption, perception (the class) and VQA (yes/no, multiple choice) from a class label."""
    mod = modality_name(modality, lang)
    qas = [
        _qa(rng, lang, "class_caption", "caption", "caption", modality=mod, label=label),
        _qa(rng, lang, "class", "perception", "class", label=label),
        _qa(rng, lang, "modality", "vqa", "modality", modality=mod),
    ]
    others = [c for c in classes if c != label]
    if others and rng.random() < 0.5:
        qas.append(
            _qa(
                rng,
                lang,
                "class_no",
                "vqa",
                "class_yes_no",
                candidate=rng.choice(others),
                label=label,
            )
        )
    else:
        qas.append(_qa(rng, lang, "class_yes", "vqa", "class_yes_no", candidate=label, label=label))
    if others:
        question = (
            "Which category does this image show?" if lang == "en" else "这张图像显示哪一类？"
        )
        qas.append(_mcq(rng, lang, "class_mcq", question, label, classes))
    return qas


def study_qas(modality: str, body_part: str | None, rng: random.Random, lang: str) -> list[QA]:
    """From a DICOM file's own tags: the modality, and the body part when it is recorded."""
    mod = modality_name(modality, lang)
    qas = [_qa(rng, lang, "modality", "vqa", "modality", modality=mod)]
    if body_part:
        qas.append(_qa(rng, lang, "body_part", "perception", "body_part", body_part=body_part))
        qas.append(
            _qa(rng, lang, "study_caption", "caption", "caption", modality=mod, body_part=body_part)
        )
    return qas
