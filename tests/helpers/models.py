"""Tiny vocabulary, model configs and synthetic batches for encoder/model tests."""

from __future__ import annotations

import string
from pathlib import Path

import torch
from omegaconf import OmegaConf

WORDS = (
    "the of and in to a with for was were is are by on patients cells protein gene expression "
    "cancer tumor disease treatment study results increased decreased levels effect induced "
    "mice rats acid drug dose cisplatin nephrotoxicity insulin glucose blood receptor kinase"
).split()


def write_tiny_vocab(path: Path) -> Path:
    """A small but real BERT WordPiece vocab: specials, characters, continuations, words."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars] + WORDS
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


def pretraining_config(vocab_file: Path, preset: str = "micro", binary_head: bool = False, **extra):
    cfg = {
        "encoder": {"preset": preset, "hidden_dropout": 0.0, "attention_dropout": 0.0, "layer_spec": "portable"},
        "tokenizer": {"library": "wordpiece", "vocab_file": str(vocab_file), "cased": False},
        "binary_head": binary_head,
        "seed": 1234,
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.999]},
    }
    cfg.update(extra)
    return OmegaConf.create(cfg)


def synthetic_mlm_batch(vocab_size: int, batch_size: int = 4, seq_len: int = 16, seed: int = 0):
    """A fixed masked-LM batch: random ids, the last rows padded, 25% of real tokens predicted."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)
    attention = torch.ones(batch_size, seq_len, dtype=torch.long)
    attention[-1, seq_len // 2:] = 0
    ids[attention == 0] = 0
    loss_mask = ((torch.rand(batch_size, seq_len, generator=g) < 0.25) & (attention == 1)).long()
    loss_mask[0, 1] = 1
    labels = torch.where(loss_mask == 1, ids, torch.full_like(ids, -100))
    inputs = torch.where(loss_mask == 1, torch.full_like(ids, 4), ids)  # [MASK]
    types = torch.zeros_like(ids)
    types[:, seq_len // 2:] = 1
    return {
        "input_ids": inputs, "attention_mask": attention, "token_type_ids": types,
        "lm_labels": labels, "loss_mask": loss_mask,
        "sentence_order_labels": torch.arange(batch_size) % 2,
    }


def batch_loss(model, batch):
    """The training loss of ``batch``: the model's ``forward`` on it, then its ``loss`` (summed)."""
    return sum(model.loss(model(**model.forward_inputs(batch)), batch).values())


def all_positions(model, batch):
    """A model's ``forward`` output on ``batch`` without any head input (masked LM: every position)."""
    return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
