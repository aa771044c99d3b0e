"""A sentencepiece `tokenizer.model` (InternLM2 ships only that and remote code)
as a `tokenizers` tokenizer, built the way InternLM2's own fast converter does,
then checked against sentencepiece itself.

BPE with byte fallback; `▁` for spaces, a dummy prefix only if the model has
one; sentencepiece's normalization (its precompiled charsmap) and
`remove_extra_whitespaces` (two regex replaces) reproduced; control and
user-defined pieces (`<|im_start|>`, ...) are never split.
The check encodes probe texts with both and refuses the import on any
difference: a silently different tokenizer would serve a different model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, processors
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import SentencePieceExtractor

from training.model.import_.formats import ImportFormatError

PROBES = (
    "Describe the findings.",
    "  Two  spaces\nand a newline ",
    "CT 胸部 影像 123 ✓ é",
    "<|im_start|>user\nWhat is shown?<|im_end|>\n<|im_start|>assistant\n",
)
CONTROL, USER_DEFINED = 3, 4


def from_sentencepiece(model_file: Path, config: dict[str, Any]) -> PreTrainedTokenizerFast:
    """`config` is the source's tokenizer_config.json (special tokens, add_bos_token)."""
    extractor = SentencePieceExtractor(str(model_file))
    proto = extractor.proto
    if proto.trainer_spec.model_type != 2:
        raise ImportFormatError("only BPE sentencepiece tokenizers convert; give a tokenizer.json")
    kwargs = extractor.extract(BPE)
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    tok = Tokenizer(BPE(kwargs["vocab"], kwargs["merges"], unk_token=unk, fuse_unk=True,
                        byte_fallback=True))  # fmt: skip
    spec = proto.normalizer_spec
    steps: list[Any] = []
    if spec.precompiled_charsmap:  # e.g. nmt_nfkc; InternLM2's is the identity
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [
            normalizers.Replace(Regex("^ +| +$"), ""),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    steps.append(normalizers.Replace(" ", "▁"))
    tok.normalizer = normalizers.Sequence(steps)
    undo = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(
        undo + ([decoders.Strip(" ", 1, 0)] if spec.add_dummy_prefix else [])
    )
    specials = [p.piece for p in proto.pieces if p.type in (CONTROL, USER_DEFINED)]
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    bos = config.get("bos_token") or "<s>"
    if config.get("add_bos_token", True):
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=config.get("eos_token") or "</s>",
        unk_token=unk,
        pad_token=config.get("pad_token"),
        clean_up_tokenization_spaces=False,
    )
    check_against_sentencepiece(out, model_file, bool(config.get("add_bos_token", True)))
    return out


def check_against_sentencepiece(
    tokenizer: PreTrainedTokenizerFast, model_file: Path, add_bos: bool
) -> None:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    for text in PROBES:
        expected = ([sp.bos_id()] if add_bos else []) + sp.encode(text)
        if tokenizer(text)["input_ids"] != expected:
            raise ImportFormatError(
                f"the tokenizer converted from {model_file.name} does not reproduce "
                "sentencepiece; put the source's tokenizer.json beside it and import again"
            )
