"""Everything megatron-core: encoder config presets, layer specs, the encoder and its heads."""

from .config import PRESETS, EncoderConfig, padded_vocab_size

__all__ = ["EncoderConfig", "PRESETS", "padded_vocab_size"]
