"""Model assembly: named presets, an offline BPE tokenizer, LLaVA checkpoints on disk."""

from training.model.assemble import assemble_checkpoint
from training.model.presets import PRESETS, ModelPreset

__all__ = ["PRESETS", "ModelPreset", "assemble_checkpoint"]
