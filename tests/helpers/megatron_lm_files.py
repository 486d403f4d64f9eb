"""Write a Hugging Face ``MegatronBert`` as real Megatron-LM / NeMo 1.x files would hold it.

Written from Megatron-LM's layout (``language_model.{embedding, encoder|transformer, pooler}``,
``lm_head``, ``binary_head`` as nested state dicts; fused QKV in the order of each
``checkpoint_version``; tensor-parallel shards split as Megatron-LM's column- and row-parallel
layers split them; the vocabulary padded to a multiple of 128 × TP; ``args`` an
``argparse.Namespace`` holding an object of a Megatron-LM class), independently of the importer
under test, so importing these files and comparing logits with the ``transformers`` model checks
the importer against an independent implementation.
"""

from __future__ import annotations

import argparse
import enum
import sys
import tarfile
import types
from pathlib import Path
from typing import Dict

import torch
import yaml


def _fake_megatron_enum():
    """A class of a module named like Megatron-LM's own (``megatron.model.enums``), registered only
    while saving — the loader never has it, as users never have Megatron-LM installed."""
    module = types.ModuleType("megatron.model.enums")

    class AttnMaskType(enum.Enum):
        padding = 1
        causal = 2

    AttnMaskType.__module__, AttnMaskType.__qualname__ = "megatron.model.enums", "AttnMaskType"
    module.AttnMaskType = AttnMaskType
    return module, AttnMaskType


def fuse(q, k, v, heads, version):
    """Megatron-LM's fused QKV of ``heads`` heads in the order of ``version``."""
    hd = q.shape[0] // heads
    rest = q.shape[1:]
    parts = [t.reshape(heads, hd, *rest) for t in (q, k, v)]
    if version < 1.0:
        fused = torch.stack(parts, dim=0)  # [3, heads, hd]
    elif version < 2.0:
        fused = torch.stack(parts, dim=2)  # [heads, hd, 3]
    else:
        fused = torch.stack(parts, dim=1)  # [heads, 3, hd]
    return fused.reshape(3 * heads * hd, *rest).contiguous()


def padded_rows(vocab: int, tp: int) -> int:
    multiple = 128 * tp
    return -(-vocab // multiple) * multiple


def legacy_shards(hf_state: Dict[str, torch.Tensor], cfg, version: float, tp: int, old_names: bool = False):
    """Per tensor-parallel rank: the nested ``model`` dict of a Megatron-LM BERT checkpoint."""
    heads, layers = cfg.num_attention_heads, cfg.num_hidden_layers
    rows = padded_rows(cfg.vocab_size, tp)

    def pad(t):
        extra = torch.zeros((rows - t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype)
        return torch.cat([t, extra])

    def cols(t, r):  # column parallel: output rows
        return t.chunk(tp, dim=0)[r].clone()

    def rows_split(t, r):  # row parallel: input columns
        return t.chunk(tp, dim=1)[r].clone()

    stack = "transformer" if old_names else "encoder"
    attn = "attention" if old_names else "self_attention"
    out = []
    for r in range(tp):
        g = hf_state.get
        encoder = {}
        for n in range(layers):
            p = f"bert.encoder.layer.{n}."
            q, k, v = (g(p + f"attention.self.{x}.weight") for x in ("query", "key", "value"))
            qb, kb, vb = (g(p + f"attention.self.{x}.bias") for x in ("query", "key", "value"))
            local = heads // tp
            sl = slice(r * (q.shape[0] // tp), (r + 1) * (q.shape[0] // tp))
            encoder.update({
                f"layers.{n}.input_layernorm.weight": g(p + "attention.ln.weight"),
                f"layers.{n}.input_layernorm.bias": g(p + "attention.ln.bias"),
                f"layers.{n}.{attn}.query_key_value.weight": fuse(q[sl], k[sl], v[sl], local, version),
                f"layers.{n}.{attn}.query_key_value.bias": fuse(qb[sl], kb[sl], vb[sl], local, version),
                f"layers.{n}.{attn}.dense.weight": rows_split(g(p + "attention.output.dense.weight"), r),
                f"layers.{n}.{attn}.dense.bias": g(p + "attention.output.dense.bias"),
                f"layers.{n}.post_attention_layernorm.weight": g(p + "ln.weight"),
                f"layers.{n}.post_attention_layernorm.bias": g(p + "ln.bias"),
                f"layers.{n}.mlp.dense_h_to_4h.weight": cols(g(p + "intermediate.dense.weight"), r),
                f"layers.{n}.mlp.dense_h_to_4h.bias": cols(g(p + "intermediate.dense.bias"), r),
                f"layers.{n}.mlp.dense_4h_to_h.weight": rows_split(g(p + "output.dense.weight"), r),
                f"layers.{n}.mlp.dense_4h_to_h.bias": g(p + "output.dense.bias"),
            })
        encoder["final_layernorm.weight"] = g("bert.encoder.ln.weight")
        encoder["final_layernorm.bias"] = g("bert.encoder.ln.bias")
        model = {
            "language_model": {
                "embedding": {
                    "word_embeddings": {"weight": cols(pad(g("bert.embeddings.word_embeddings.weight")), r)},
                    "position_embeddings": {"weight": g("bert.embeddings.position_embeddings.weight")},
                    "tokentype_embeddings": {"weight": g("bert.embeddings.token_type_embeddings.weight")},
                },
                stack: encoder,
                "pooler": {"dense.weight": g("bert.pooler.dense.weight"), "dense.bias": g("bert.pooler.dense.bias")},
            },
            "lm_head": {"dense.weight": g("cls.predictions.transform.dense.weight"),
                        "dense.bias": g("cls.predictions.transform.dense.bias"),
                        "layernorm.weight": g("cls.predictions.transform.LayerNorm.weight"),
                        "layernorm.bias": g("cls.predictions.transform.LayerNorm.bias"),
                        "bias": cols(pad(g("cls.predictions.bias")), r)},
            "binary_head": {"weight": g("cls.seq_relationship.weight"), "bias": g("cls.seq_relationship.bias")},
        }
        out.append(model)
    return out


def write_megatron_lm(hf_model, root: Path, version: float, tp: int, iteration: int = 1000,
                      old_names: bool = False, with_args: bool = True) -> Path:
    """``root/latest_checkpointed_iteration.txt`` + ``iter_NNNNNNN/mp_rank_XX/model_optim_rng.pt``."""
    cfg = hf_model.config
    state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    shards = legacy_shards(state, cfg, version, tp, old_names)
    module, mask_type = _fake_megatron_enum()
    sys.modules.update({"megatron.model": types.ModuleType("megatron.model"), "megatron.model.enums": module})
    try:
        args = argparse.Namespace(
            num_layers=cfg.num_hidden_layers, hidden_size=cfg.hidden_size, num_attention_heads=cfg.num_attention_heads,
            ffn_hidden_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
            layernorm_epsilon=cfg.layer_norm_eps, padded_vocab_size=padded_rows(cfg.vocab_size, tp),
            tensor_model_parallel_size=tp, tokenizer_type="BertWordPieceLowerCase", hidden_dropout=0.1,
            attention_dropout=0.1, attn_mask_type=mask_type.padding, params_dtype=torch.float32)
        folder = root / f"iter_{iteration:07d}"
        for rank, model in enumerate(shards):
            (folder / f"mp_rank_{rank:02d}").mkdir(parents=True, exist_ok=True)
            ckpt = {"model": model, "iteration": iteration, "optimizer": {}, "rng_state": [torch.get_rng_state()]}
            if version:
                ckpt["checkpoint_version"] = version
            if with_args:
                ckpt["args"] = args
            torch.save(ckpt, folder / f"mp_rank_{rank:02d}" / "model_optim_rng.pt")
    finally:
        for name in ("megatron.model.enums", "megatron.model"):
            sys.modules.pop(name, None)
    (root / "latest_checkpointed_iteration.txt").write_text(str(iteration))
    return root


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def write_nemo1(hf_model, path: Path, vocab_file: Path, prefix: str = "model.", extra=None) -> Path:
    """A NeMo 1.x MegatronBert ``.nemo``: flat ``model.``-prefixed legacy names, v3.0 QKV order."""
    cfg = hf_model.config
    state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    legacy = _flat(legacy_shards(state, cfg, 3.0, 1)[0])
    flat = {f"{prefix}{k}": v for k, v in legacy.items()}
    flat.update(extra or {})
    work = path.parent / (path.name + ".parts")
    work.mkdir(parents=True, exist_ok=True)
    torch.save(flat, work / "model_weights.ckpt")
    (work / "abc123_vocab.txt").write_bytes(Path(vocab_file).read_bytes())
    config = {"target": "nemo.collections.nlp.models.language_modeling.megatron_bert_model.MegatronBertModel",
              "num_layers": cfg.num_hidden_layers, "hidden_size": cfg.hidden_size,
              "num_attention_heads": cfg.num_attention_heads, "ffn_hidden_size": cfg.intermediate_size,
              "max_position_embeddings": cfg.max_position_embeddings, "layernorm_epsilon": cfg.layer_norm_eps,
              "tokenizer": {"library": "megatron", "type": "BertWordPieceLowerCase",
                            "vocab_file": "nemo:abc123_vocab.txt"}}
    (work / "model_config.yaml").write_text(yaml.safe_dump(config))
    with tarfile.open(path, "w:") as tar:
        for name in ("model_config.yaml", "model_weights.ckpt", "abc123_vocab.txt"):
            tar.add(work / name, arcname=f"./{name}")
    return path
