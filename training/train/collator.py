"""Batches for LLaVA training: chat template, image tokens, assistant-only labels.

1. The conversation is rendered with the checkpoint's chat template and
   tokenized with character offsets.
2. Labels are the token ids inside assistant turns (from the first content
   character through the end-of-turn token); everything else is -100, so only
   the answers carry loss.
3. Each image token is repeated to the number of vision patches, as
   `LlavaProcessor` does, and the image goes through the checkpoint's image
   processor.
4. Sequences are truncated to `max_length` (never inside the image tokens) and
   right-padded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100


@dataclass
class LlavaCollator:
    processor: Any
    """the checkpoint's LlavaProcessor (tokenizer + image processor + chat template)"""
    image_seq_length: int
    max_length: int = 2048

    def __post_init__(self) -> None:
        tokenizer = self.processor.tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.processor.image_token)
        self.end_of_turn = tokenizer.eos_token
        self.pad_id = tokenizer.pad_token_id
        if self.max_length <= self.image_seq_length:
            raise ValueError(f"max_length {self.max_length} leaves no room after the image")

    def assistant_spans(self, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the character spans of the assistant answers."""
        render = self.processor.apply_chat_template
        text = render(messages, tokenize=False)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = len(render(messages[:i], tokenize=False, add_generation_prompt=True))
            end = text.index(self.end_of_turn, start) + len(self.end_of_turn)
            spans.append((start, end))
        return text, spans

    def encode(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
        text, spans = self.assistant_spans(messages)
        encoded = self.processor.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True
        )
        ids, labels = [], []
        for token, (start, end) in zip(
            encoded["input_ids"], encoded["offset_mapping"], strict=True
        ):
            inside = any(s <= start and end <= e for s, e in spans)
            if token == self.image_token_id:
                ids += [token] * self.image_seq_length
                labels += [IGNORE_INDEX] * self.image_seq_length
            else:
                ids.append(token)
                labels.append(token if inside else IGNORE_INDEX)
        if len(ids) > self.max_length:
            last_image = max((i for i, t in enumerate(ids) if t == self.image_token_id), default=-1)
            if last_image >= self.max_length:
                raise ValueError("max_length would cut through the image tokens")
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        return ids, labels

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = [self.encode(item["messages"]) for item in batch]
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, labs) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(labs)] = torch.tensor(labs)
            attention[row, : len(ids)] = 1
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        images = [item["image"] for item in batch if item["image"] is not None]
        if images:
            pixels = self.processor.image_processor(images, return_tensors="pt")
            out["pixel_values"] = pixels["pixel_values"]
        return out
