"""Named model configurations. A preset is plain data; `assemble.py` turns it into weights."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisionPreset:
    """CLIP vision tower."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int


@dataclass(frozen=True)
class TextPreset:
    """Llama causal LM. head_dim must be one vLLM's CPU attention supports
    (32, 64, 80, 96, 112, 128, ...): an unsupported one passes health and then
    kills the engine at the first request."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int


@dataclass(frozen=True)
class ModelPreset:
    name: str
    vision: VisionPreset
    text: TextPreset
    vocab_size: int
    """Target size of the byte-level BPE vocabulary (special tokens included)."""

    @property
    def image_tokens(self) -> int:
        """Tokens one image occupies in the prompt (patches; CLS is dropped)."""
        return (self.vision.image_size // self.vision.patch_size) ** 2


PRESETS: dict[str, ModelPreset] = {
    # Small enough to assemble in seconds and run on 2 CPU cores; shaped so
    # that vLLM's CPU backend accepts it (head_dim 32).
    "tiny": ModelPreset(
        name="tiny",
        vision=VisionPreset(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
        ),
        text=TextPreset(
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=32,
            max_position_embeddings=2048,
        ),
        vocab_size=2048,
    ),
}
