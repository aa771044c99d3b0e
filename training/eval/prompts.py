"""Benchmark items -> OpenAI chat messages, worded as VLMEvalKit and LLaVA-Med word them."""

from __future__ import annotations

import base64
from typing import Any

from training.eval.datasets import EvalItem

SHORT_ANSWER = "Answer the question using a single word or phrase."


def mcq_prompt(item: EvalItem) -> str:
    """VLMEvalKit's ImageMCQDataset prompt: hint, question, lettered options, instruction."""
    prompt = f"Hint: {item.hint}\n" if item.hint else ""
    prompt += f"Question: {item.question}\n"
    if item.options:
        prompt += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in item.options.items())
        prompt += "Please select the correct answer from the options above. \n"
    return prompt


def vqa_prompt(item: EvalItem) -> str:
    return f"{item.question}\n{SHORT_ANSWER}"


def image_data_url(data: bytes) -> str:
    return f"data:{sniff_mime(data)};base64,{base64.b64encode(data).decode()}"


def sniff_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[128:132] == b"DICM":
        return "application/dicom"
    return "image/png"


def build_messages(item: EvalItem) -> list[dict[str, Any]]:
    text = mcq_prompt(item) if item.kind == "mcq" else vqa_prompt(item)
    content: list[dict[str, Any]] = []
    if item.image is not None:
        content.append({"type": "image_url", "image_url": {"url": image_data_url(item.image)}})
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]
