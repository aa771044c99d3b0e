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


def test_token_bytes_are_exact_where_tokens_split_characters(tokenizer):
    from service.engines.detokenize import TokenBytes

    # rare characters (an anatomical heart, a double-struck A): several tokens each
    text = "病灶位于图像的左上区域 \U0001fac0\U0001d538 CT shows a nodule."
    ids = tokenizer.encode(text, add_special_tokens=False)
    token_bytes = TokenBytes(tokenizer)
    pieces = [token_bytes(i) for i in ids]
    assert b"".join(raw for _, raw in pieces).decode() == text  # exact, byte for byte
    assert any(t == "\ufffd" for t, _ in pieces)  # some token is part of a character
    assert all(t == raw.decode("utf-8", errors="replace") for t, raw in pieces)
