"""Hugging Face BERT weights in this library's names, both ways.

In (:func:`read_hf`): a ``BertModel`` / ``BertFor*`` / ``MegatronBert*`` folder (``config.json``, and
``model.safetensors`` or ``pytorch_model.bin`` — each sharded or not — read weights-only) → our
layout-free weights and sizes. A ``model_type: bert`` folder (BioBERT, PubMedBERT: post-LayerNorm)
becomes an encoder with ``layernorm_order: post``. Out (:func:`ours_to_hf`, :func:`encoder_to_hf`,
:func:`pretraining_heads_to_hf`): our weights under HF's names, which
:mod:`biomegatron_nemo.export.hf` writes as a folder ``transformers`` loads by itself.

The name mapping is the same both ways (:data:`_ENCODER_MAP`, :data:`_LAYER_MAP`); HF keeps
queries, keys and values apart, megatron-core fuses them per head
(:func:`~biomegatron_nemo.checkpoints.megatron_legacy.fuse_qkv`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from biomegatron_nemo.checkpoints.megatron_legacy import fuse_qkv, split_qkv
from biomegatron_nemo.checkpoints.megatron_lm import ImportedWeights

#: HF name (after the ``bert.`` prefix) → ours, outside the layers
_ENCODER_MAP = {
    "embeddings.word_embeddings.weight": "encoder.embedding.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "encoder.embedding.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "encoder.embedding.tokentype_embeddings.weight",
    "encoder.ln.weight": "encoder.encoder.final_layernorm.weight",
    "encoder.ln.bias": "encoder.encoder.final_layernorm.bias",
}
_HEAD_MAP = {
    "cls.predictions.transform.dense.weight": "mlm_head.lm_head.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_head.lm_head.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_head.lm_head.layer_norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_head.lm_head.layer_norm.bias",
    "cls.predictions.bias": "mlm_head.output_layer.bias",
    "cls.seq_relationship.weight": "binary_head.classifier.weight",
    "cls.seq_relationship.bias": "binary_head.classifier.bias",
    "bert.pooler.dense.weight": "binary_head.pooler.dense.weight",
    "bert.pooler.dense.bias": "binary_head.pooler.dense.bias",
}
#: inside layer N: HF suffix → ours (query/key/value are fused separately)
_LAYER_MAP = {
    "attention.ln": "input_layernorm",
    "attention.output.dense": "self_attention.linear_proj",
    "ln": "pre_mlp_layernorm",
    "intermediate.dense": "mlp.linear_fc1",
    "output.dense": "mlp.linear_fc2",
}
#: the original (post-LayerNorm) BERT: HF ``BertModel`` names → ours (``layernorm_order: post``)
_BERT_ENCODER_MAP = {**{k: v for k, v in _ENCODER_MAP.items() if k.startswith("embeddings.")},
                     "embeddings.LayerNorm.weight": "encoder.embedding_layernorm.weight",
                     "embeddings.LayerNorm.bias": "encoder.embedding_layernorm.bias"}
_BERT_LAYER_MAP = {
    "attention.output.dense": "self_attention.linear_proj",
    "attention.output.LayerNorm": "self_attn_bda.layer_norm",
    "intermediate.dense": "mlp.linear_fc1",
    "output.dense": "mlp.linear_fc2",
    "output.LayerNorm": "mlp_bda.layer_norm",
}
#: HF model_type → (encoder map, layer map, our layernorm_order, HF class prefix)
ARCHITECTURES = {"megatron-bert": (_ENCODER_MAP, _LAYER_MAP, "pre", "MegatronBert"),
                 "bert": (_BERT_ENCODER_MAP, _BERT_LAYER_MAP, "post", "Bert")}
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
#: the heads of HF's BertFor{TokenClassification,SequenceClassification,QuestionAnswering}
_TASK_HEADS = ("classifier.", "qa_outputs.")
#: the files of a folder the conversion reads besides the weights
CONFIG_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json")
#: tied to the word embeddings in HF (checked equal, not stored twice)
_TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


def transformers_module():
    try:
        import transformers
    except ImportError as err:
        raise ImportError("Hugging Face import and export need transformers: pip install 'biomegatron_nemo[hf]'") from err
    return transformers


def weight_files(folder: Path) -> List[Path]:
    """The weight files of a folder: one ``model.safetensors`` / ``pytorch_model.bin`` or the shards
    its ``.index.json`` names (each checked to be there)."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / index).is_file():
            try:
                names = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise ValueError(f"{folder / index}: expected a JSON object with a weight_map ({err})") from None
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise FileNotFoundError(f"{folder / index} names {len(names)} shard(s); missing: {', '.join(missing)}")
            return [folder / n for n in names]
        if (folder / single).is_file():
            return [folder / single]
    raise FileNotFoundError(f"{folder}: no weights (model.safetensors, pytorch_model.bin, or a sharded "
                            "*.index.json with its shards)")


def _read_weights(files: List[Path]) -> Dict[str, torch.Tensor]:
    transformers_module()  # brings safetensors
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state = {}
    for path in files:
        try:
            if path.suffix == ".safetensors":
                state.update(load_file(str(path)))
            else:
                state.update(torch.load(path, map_location="cpu", weights_only=True))
        except (SafetensorError, RuntimeError, EOFError, OSError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{path}: not a readable weights file ({first})") from None
    return state


def hf_to_ours(hf: Dict[str, torch.Tensor], heads: int, source: str, model_type: str = "megatron-bert"
               ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """HF MegatronBert (or BERT) tensors → ours; returns (weights, notes). Unknown tensors are an error."""
    encoder_map, layer_map, _, _ = ARCHITECTURES[model_type]
    ours, qkv, unknown, notes, task_heads = {}, {}, [], [], []
    for key, value in hf.items():
        if key in _HEAD_MAP or key in _TIED:
            if key in _HEAD_MAP:
                ours[_HEAD_MAP[key]] = value
            continue
        body = key[len("bert."):] if key.startswith("bert.") else key
        layer = _HF_LAYER.match(body)
        if body in encoder_map:
            ours[encoder_map[body]] = value
        elif body.startswith("pooler.") and f"bert.{body}" in _HEAD_MAP:
            ours[_HEAD_MAP[f"bert.{body}"]] = value
        elif layer and layer.group(2).startswith("attention.self."):
            qkv.setdefault((int(layer.group(1)), layer.group(3)), {})[layer.group(2).rpartition(".")[2]] = value
        elif layer and layer.group(2) in layer_map:
            ours[f"encoder.encoder.layers.{layer.group(1)}.{layer_map[layer.group(2)]}.{layer.group(3)}"] = value
        elif key.endswith("position_ids"):
            continue  # a buffer, not a weight
        elif key.startswith(_TASK_HEADS):
            task_heads.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{source}: tensors this converter does not know (nothing was converted): {sorted(unknown)}")
    for (n, kind), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"{source}: layer {n} attention {kind}: found {sorted(parts)}, needs query, key and value")
        ours[f"encoder.encoder.layers.{n}.self_attention.linear_qkv.{kind}"] = fuse_qkv(
            parts["query"], parts["key"], parts["value"], heads)
    decoder = hf.get("cls.predictions.decoder.weight")
    word = ours.get("encoder.embedding.word_embeddings.weight")
    if decoder is not None and word is not None and not torch.equal(decoder, word):
        raise ValueError(f"{source}: cls.predictions.decoder.weight differs from the word embeddings; this "
                         "library ties them (as Megatron-LM does)")
    if task_heads:
        notes.append(f"left out: the source's task head {sorted(task_heads)} (fine-tuning builds its own)")
    return ours, notes


def _config_sizes(config: Dict, config_file: Path) -> Dict:
    try:
        heads = int(config["num_attention_heads"])
        return {"num_layers": int(config["num_hidden_layers"]), "hidden_size": int(config["hidden_size"]),
                "num_attention_heads": heads, "ffn_hidden_size": int(config["intermediate_size"]),
                "max_position_embeddings": int(config["max_position_embeddings"]),
                "num_tokentypes": int(config.get("type_vocab_size", 2)),
                "layernorm_epsilon": float(config.get("layer_norm_eps", 1e-12)),
                "hidden_dropout": float(config.get("hidden_dropout_prob", 0.1)),
                "attention_dropout": float(config.get("attention_probs_dropout_prob", 0.1)),
                "layernorm_order": ARCHITECTURES[config["model_type"]][2]}
    except KeyError as err:
        raise ValueError(f"{config_file}: no {err.args[0]} (a BERT config.json has it)") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config_file}: {err}") from None


def check_shapes(state: Dict[str, torch.Tensor], sizes: Dict, vocab_size: Optional[int], config_file: Path) -> None:
    """One line naming ``config.json``'s key when the weights were made for other sizes."""
    h, f = sizes["hidden_size"], sizes["ffn_hidden_size"]
    expected = {"encoder.embedding.word_embeddings.weight": ("vocab_size / hidden_size", (vocab_size, h)),
                "encoder.embedding.position_embeddings.weight": ("max_position_embeddings / hidden_size",
                                                                 (sizes["max_position_embeddings"], h)),
                "encoder.embedding.tokentype_embeddings.weight": ("type_vocab_size / hidden_size",
                                                                  (sizes["num_tokentypes"], h))}
    for n in range(sizes["num_layers"]):
        prefix = f"encoder.encoder.layers.{n}."
        expected[prefix + "self_attention.linear_qkv.weight"] = ("hidden_size", (3 * h, h))
        expected[prefix + "mlp.linear_fc1.weight"] = ("intermediate_size / hidden_size", (f, h))
    for key, (names, shape) in expected.items():
        if key not in state:
            if key.startswith("encoder.encoder.layers."):
                raise ValueError(f"{config_file}: num_hidden_layers is {sizes['num_layers']} but the weights "
                                 f"have no layer {key.split('.')[3]}")
            continue
        have = tuple(state[key].shape)
        if any(w is not None and w != g for w, g in zip(shape, have)):
            raise ValueError(f"{config_file}: {names} say {tuple(shape)} but the weights hold {have} ({key})")
    layers = {int(k.split(".")[3]) for k in state if k.startswith("encoder.encoder.layers.")}
    if layers and max(layers) + 1 != sizes["num_layers"]:
        raise ValueError(f"{config_file}: num_hidden_layers is {sizes['num_layers']} but the weights have "
                         f"{max(layers) + 1} layers")


def read_hf(folder: Union[str, Path], workdir: Union[str, Path], vocab_file: Optional[str] = None
            ) -> Tuple[ImportedWeights, Path]:
    """A Hugging Face ``BertModel`` / ``BertFor*`` / ``MegatronBert*`` folder → (:class:`ImportedWeights`,
    its vocabulary file). The vocabulary comes from ``vocab_file``, the folder's ``vocab.txt`` or its
    ``tokenizer.json`` (then written into ``workdir``); heads the source lacks are simply absent."""
    from biomegatron_nemo.checkpoints.hf_vocab import hf_vocabulary

    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (is it a Hugging Face model folder?)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from None
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{config_file}: model_type {model_type!r}; this converter reads {sorted(ARCHITECTURES)}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{config_file}: position_embedding_type {config['position_embedding_type']!r}; "
                         "the encoder has learned absolute positions")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{config_file}: hidden_act {config['hidden_act']!r}; the encoder uses gelu")
    sizes = _config_sizes(config, config_file)
    files = weight_files(folder)
    state, notes = hf_to_ours(_read_weights(files), sizes["num_attention_heads"], str(folder), model_type)
    check_shapes(state, sizes, config.get("vocab_size"), config_file)
    if vocab_file:
        vocab, cased, vocab_notes = Path(vocab_file), None, []
    else:
        vocab, cased, vocab_notes = hf_vocabulary(folder, Path(workdir))
    entries = sum(1 for line in vocab.read_text(encoding="utf-8").splitlines() if line.strip())
    rows = state["encoder.embedding.word_embeddings.weight"].shape[0]
    if entries > rows:
        raise ValueError(f"{vocab}: {entries} entries but the word embeddings have {rows} rows "
                         f"(config.json vocab_size {config.get('vocab_size')}); is it this model's vocabulary?")
    binary = "binary_head.classifier.weight" in state
    summary = [f"Hugging Face {(config.get('architectures') or [ARCHITECTURES[model_type][3] + 'Model'])[0]} {folder} "
               f"({', '.join(p.name for p in files)})",
               f"encoder: {sizes}",
               f"{len(state)} tensors mapped"] + notes + vocab_notes
    return ImportedWeights(state, sizes, binary, cased, summary), vocab


def ours_to_hf(state: Dict[str, torch.Tensor], heads: int, with_mlm_head: bool = True,
               model_type: str = "megatron-bert") -> Dict[str, torch.Tensor]:
    """Our layout-free pretraining weights → HF ``MegatronBertFor{MaskedLM,PreTraining}`` names
    (``BertFor*`` with ``model_type="bert"``; ``with_mlm_head=False``: the encoder's tensors only,
    as the task models' exports take them)."""
    encoder_map, layer_map, _, _ = ARCHITECTURES[model_type]
    inverse = {v: f"bert.{k}" for k, v in encoder_map.items()}
    inverse.update({v: k for k, v in _HEAD_MAP.items()})
    layer_inverse = {v: k for k, v in layer_map.items()}
    out = {}
    for key, value in state.items():
        match = re.match(r"^encoder\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
        if key in inverse:
            out[inverse[key]] = value
        elif match and match.group(2) == "self_attention.linear_qkv":
            n, kind = match.group(1), match.group(3)
            for name, part in zip(("query", "key", "value"), split_qkv(value, 2.0, heads)):
                out[f"bert.encoder.layer.{n}.attention.self.{name}.{kind}"] = part.clone()
        elif match and match.group(2) in layer_inverse:
            out[f"bert.encoder.layer.{match.group(1)}.{layer_inverse[match.group(2)]}.{match.group(3)}"] = value
        else:
            raise ValueError(f"{key}: no Hugging Face MegatronBert counterpart")
    if with_mlm_head:
        out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"]
        out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]
    return out


def encoder_to_hf(state: Dict[str, torch.Tensor], heads: int, model_type: str) -> Dict[str, torch.Tensor]:
    """The ``encoder.*`` tensors of our weights under HF's ``bert.`` names."""
    return ours_to_hf({k: v for k, v in state.items() if k.startswith("encoder.")}, heads, with_mlm_head=False,
                      model_type=model_type)


def pretraining_heads_to_hf(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The masked-LM (and sentence-order) head of our pretraining model under HF's names."""
    inverse = {v: k for k, v in _HEAD_MAP.items()}
    return {inverse[k]: v for k, v in state.items() if k in inverse}
