"""The collator: chat template, image tokens as the processor expands them, labels on
assistant tokens only."""

import pytest
from PIL import Image
from transformers import AutoProcessor

from training.train.collator import IGNORE_INDEX, LlavaCollator
from training.train.dataset import LlavaDataset, load_examples, to_messages


@pytest.fixture(scope="module")
def processor(tiny_checkpoint):
    return AutoProcessor.from_pretrained(tiny_checkpoint)


CONVERSATION = [
    {"from": "human", "value": "<image>\nIs there a lesion in this image?"},
    {"from": "gpt", "value": "Yes, there is a lesion."},
    {"from": "human", "value": "Where is the lesion located?"},
    {"from": "gpt", "value": "In the upper left."},
]


def test_only_assistant_answers_carry_labels(processor):
    collator = LlavaCollator(processor, image_seq_length=16, max_length=512)
    image = Image.new("RGB", (56, 56), (80, 80, 80))
    batch = collator([{"image": image, "messages": to_messages(CONVERSATION)}])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    learned = processor.tokenizer.decode(ids[labels != IGNORE_INDEX])
    assert learned == "Yes, there is a lesion.<|im_end|>In the upper left.<|im_end|>"
    assert (labels[labels != IGNORE_INDEX] == ids[labels != IGNORE_INDEX]).all()
    # Same ids and pixels as the LLaVA processor gives the served model.
    prompt = processor.apply_chat_template(to_messages(CONVERSATION))
    reference = processor(images=[image], text=prompt, return_tensors="pt")
    assert ids.tolist() == reference["input_ids"][0].tolist()
    assert (batch["pixel_values"] == reference["pixel_values"]).all()
    assert (ids == collator.image_token_id).sum() == 16


def test_padding_and_truncation(processor):
    collator = LlavaCollator(processor, image_seq_length=16, max_length=30)
    image = Image.new("RGB", (56, 56))
    short = to_messages(CONVERSATION[:2])
    batch = collator([{"image": image, "messages": short},
                      {"image": image, "messages": to_messages(CONVERSATION)}])  # fmt: skip
    assert batch["input_ids"].shape == (2, 30)
    full_short = collator.encode(short)[0]
    pad = len(full_short) if len(full_short) < 30 else 30
    assert batch["attention_mask"][0].sum() == pad
    assert (batch["labels"][0][pad:] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="no room"):
        LlavaCollator(processor, image_seq_length=16, max_length=16)


def test_examples_from_the_mixture_load_their_images(demo_corpus):
    examples = load_examples(demo_corpus / "example_list.json")
    assert len(examples) > 40
    item = LlavaDataset(examples)[0]
    assert item["image"].mode == "RGB" and item["image"].size == (112, 112)
    assert item["messages"][0]["content"][0] == {"type": "image"}
    assert item["messages"][1]["role"] == "assistant"
