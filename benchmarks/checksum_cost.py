"""What the tensor checksums cost at the paper's 345m size: the time to compute the CRC-32 of every
tensor of a ``.nemo``'s weights and of a training checkpoint (weights and AdamW's two moments),
beside the time ``torch.save`` and ``torch.load`` take for the same bytes on this disk. Prints
one JSON line (docs/reliability.md quotes it).

    python benchmarks/checksum_cost.py                   # 345m, vocabulary 30592, files in /tmp
    python benchmarks/checksum_cost.py --preset 1.2b --folder /scratch

The checksum reads each byte once (``zlib.crc32``) and does not depend on what the bytes are, so
the tensors hold random values of the preset's real shapes and dtype (fp32), from the encoder
configuration the library builds; one core.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from biomegatron_nemo.checkpoints.checksums import iter_tensors, tensor_checksums
from biomegatron_nemo.encoder.config import EncoderConfig


def preset_shapes(preset: str, vocab_size: int) -> dict:
    """The weight shapes of a Megatron-BERT encoder with a masked-LM head (biases included)."""
    cfg = EncoderConfig.from_preset(preset)
    h, f = cfg.hidden_size, cfg.ffn_hidden_size
    shapes = {"word_embeddings": (vocab_size, h), "position_embeddings": (cfg.max_position_embeddings, h),
              "tokentype_embeddings": (2, h), "final_layernorm": (2, h), "lm_head.dense": (h + 1, h),
              "lm_head.layernorm": (2, h), "lm_head.bias": (vocab_size,)}
    for layer in range(cfg.num_layers):
        shapes.update({f"layers.{layer}.qkv": (3 * h + 1, h), f"layers.{layer}.proj": (h + 1, h),
                       f"layers.{layer}.fc1": (f + 1, h), f"layers.{layer}.fc2": (h + 1, f),
                       f"layers.{layer}.layernorms": (4, h)})
    return shapes


def timed(function, repeats: int = 3) -> float:
    """The fastest of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="345m")
    parser.add_argument("--vocab-size", type=int, default=30592)
    parser.add_argument("--folder", default=tempfile.gettempdir(), help="where the timed files are written")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    weights = {name: torch.randn(shape, generator=generator) for name, shape in
               preset_shapes(args.preset, args.vocab_size).items()}
    training = {"state_dict": weights,
                "optimizer_states": [{"state": {i: {"exp_avg": torch.randn_like(w), "exp_avg_sq": torch.rand_like(w)}
                                                for i, w in enumerate(weights.values())}}]}
    result = {"preset": args.preset, "vocab_size": args.vocab_size,
              "parameters": sum(w.numel() for w in weights.values())}
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        for name, tree in (("weights", weights), ("training_checkpoint", training)):
            path = f"{folder}/{name}.pt"
            result[f"{name}_gb"] = round(sum(t.numel() * 4 for _, t in iter_tensors(tree)) / 1e9, 2)
            result[f"{name}_checksum_s"] = round(timed(lambda: tensor_checksums(tree)), 2)
            result[f"{name}_save_s"] = round(timed(lambda: torch.save(tree, path), repeats=1), 2)
            result[f"{name}_load_s"] = round(timed(lambda: torch.load(path, weights_only=True), repeats=1), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
