"""The demo's component pretraining, standing in for GMAI-VL's pretrained parts.

GMAI-VL starts from a pretrained LLM and a pretrained CLIP encoder. A freshly
initialised tiny model has neither, and then stages I-II teach nothing (a
frozen random LM cannot read the projector's output). So the demo first
pretrains its components on the demo corpus:

- the LM on the corpus's text (questions and answers rendered with the chat
  template, no image), the role the paper's text-only share plays;
- the vision encoder CLIP-style: a symmetric contrastive loss between mean-pooled
  patch features and bag-of-words caption embeddings, with every sample whose
  caption is identical counted as a positive (captions repeat across images).

Both are short plain loops (read top to bottom); the three stages use the Trainer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.demo_recipe import PretrainConfig
from training.train.dataset import Example, LlavaDataset


def cosine_lr(step: int, config: PretrainConfig) -> float:
    if step < config.warmup:
        return config.learning_rate * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def _loop(
    params: list[torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    config: PretrainConfig,
    desc: str,
    progress: bool,
) -> list[tuple[int, float]]:
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    curve = []
    bar = tqdm(range(config.steps), desc=desc, disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, config)
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 10 == 0 or step == config.steps - 1:
            curve.append((step + 1, float(loss)))
            bar.set_postfix(loss=f"{float(loss):.3f}")
    return curve


def text_batches(processor: Any, examples: list[Example], seed: int) -> list[list[int]]:
    """Each example's conversation as chat-template text with the image part removed."""
    texts = []
    for example in examples:
        messages = [
            {**m, "content": [p for p in m["content"] if p["type"] == "text"]}
            if isinstance(m["content"], list)
            else m
            for m in example.messages
        ]
        texts.append(processor.apply_chat_template(messages, tokenize=False))
    random.Random(seed).shuffle(texts)
    return [processor.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def pretrain_language_model(
    model: Any, processor: Any, examples: list[Example], config: PretrainConfig, progress: bool
) -> list[tuple[int, float]]:
    """Causal LM loss on every token of the corpus's text; only the LM learns."""
    sequences = text_batches(processor, examples, config.seed)
    pad = processor.tokenizer.pad_token_id
    params = [
        p
        for n, p in model.named_parameters()
        if n.startswith(("model.language_model.", "lm_head."))
    ]
    model.train()

    def loss_at(step: int) -> torch.Tensor:
        start = (step * config.batch_size) % max(1, len(sequences) - config.batch_size)
        batch = sequences[start : start + config.batch_size]
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
        labels = ids.masked_fill(mask == 0, -100)
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    return _loop(params, loss_at, config, "pretrain LM on corpus text", progress)


def caption_of(example: Example) -> str | None:
    """The answer of a caption record (`Describe...` / `Write a short caption...`)."""
    first = example.messages[0]["content"]
    question = next((p["text"] for p in first if p["type"] == "text"), "")
    if question.startswith(("Describe", "Write a short caption")):
        return example.messages[1]["content"]
    return None


def pretrain_vision_encoder(
    model: Any, processor: Any, examples: list[Example], config: PretrainConfig, progress: bool
) -> list[tuple[int, float]]:
    """CLIP-style contrastive training of the vision tower on image-caption pairs."""
    pairs = [(e, c) for e in examples if (c := caption_of(e)) is not None]
    if not pairs:
        raise ValueError("no caption records to pretrain the vision encoder on")
    generator = torch.Generator().manual_seed(config.seed)
    vision = model.model.vision_tower
    width = vision.config.hidden_size
    embedding = model.get_input_embeddings()
    image_head = torch.nn.Linear(width, 128)
    text_head = torch.nn.Linear(embedding.embedding_dim, 128)
    temperature = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = [*vision.parameters(), *image_head.parameters(), *text_head.parameters(),
              temperature]  # fmt: skip
    images = LlavaDataset([e for e, _ in pairs])
    vision.train()

    def loss_at(step: int) -> torch.Tensor:
        index = torch.randint(len(pairs), (config.batch_size,), generator=generator).tolist()
        pixels = processor.image_processor(
            [images[i]["image"] for i in index], return_tensors="pt"
        )["pixel_values"]
        patches = vision(pixel_values=pixels).last_hidden_state[:, 1:]  # drop CLS, as LLaVA
        image_vec = F.normalize(image_head(patches.mean(dim=1)), dim=-1)
        captions = [pairs[i][1] for i in index]
        with torch.no_grad():  # the LM's embeddings are the (frozen) text encoder's words
            words = [
                embedding.weight[processor.tokenizer(c, add_special_tokens=False)["input_ids"]]
                for c in captions
            ]
        text_vec = F.normalize(text_head(torch.stack([w.mean(0) for w in words])), dim=-1)
        logits = image_vec @ text_vec.T * temperature.exp().clamp(max=100)
        same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
        targets = same / same.sum(dim=1, keepdim=True)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T))

    return _loop(params, loss_at, config, "pretrain vision encoder (CLIP-style)", progress)
