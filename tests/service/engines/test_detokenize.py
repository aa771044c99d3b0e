"""The detokenizer on a real byte-level BPE (the tiny model's), with multi-byte text."""

import pytest

from service.engines.detokenize import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoint)


def stream(tokenizer, text, stop=()):
    detok = IncrementalDetokenizer(tokenizer, stop)
    pieces = []
    for token_id in tokenizer.encode(text, add_special_tokens=False):
        pieces.append(detok.add(token_id))
        if detok.stopped:
            break
    pieces.append(detok.flush())
    return pieces, detok


def test_never_emits_partial_utf8(tokenizer):
    text = "病灶位于图像的左上区域。 CT shows a nodule."
    pieces, _ = stream(tokenizer, text)
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_stop_string_is_cut_and_not_returned(tokenizer):
    pieces, detok = stream(tokenizer, "Findings: nodule. Impression: benign.", stop=("Impression",))
    assert "".join(pieces) == "Findings: nodule. "
    assert detok.stopped


def test_text_that_only_starts_like_a_stop_is_released(tokenizer):
    pieces, detok = stream(tokenizer, "The lung is clear", stop=("lungs are",))
    assert "".join(pieces) == "The lung is clear"
    assert not detok.stopped
