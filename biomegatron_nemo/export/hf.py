"""This library's models as Hugging Face folders that ``transformers`` loads by itself.

:func:`export_hf` writes a model — the pretraining model as ``MegatronBertForMaskedLM``
(``MegatronBertForPreTraining`` with the sentence-order head), the task models as
``MegatronBertFor{TokenClassification,SequenceClassification,QuestionAnswering}`` (``BertFor*`` for a
post-LayerNorm encoder; each model says how in its ``hf_export()``, its heads name their tensors) —
with ``vocab.txt`` and the tokenizer config, so ``AutoTokenizer`` and ``pipeline(...)`` work on it.
Then it loads the folder with ``transformers`` and checks that it gives the model's own ``forward``
outputs on a sample batch: an export that would serve other logits is an error, never a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

from biomegatron_nemo.checkpoints.hf import encoder_to_hf, transformers_module

#: how far the exported model's outputs may be from ours (fp32, the same weights)
CHECK_TOLERANCE = 1e-4


def export_hf(model, out_dir: Union[str, Path], check: bool = True) -> List[str]:
    """``model`` (any model of this library) as a Hugging Face folder at ``out_dir``; returns the
    summary lines. ``check``: compare ``transformers``' outputs with ``model(...)``'s."""
    state = model.layout_free_state_dict()
    hf_class, heads, extra = model.hf_export(state)
    lines = write_hf(model, out_dir, hf_class, state, heads, extra)
    if check:
        lines.append(check_export(model, out_dir))
    return lines


def export_nemo_hf(nemo_file: str, out_dir: Union[str, Path]) -> List[str]:
    """A ``.nemo`` of this library (any model) as a Hugging Face folder (:func:`export_hf`)."""
    from biomegatron_nemo.models.base import BioMegatronModelPT

    return export_hf(BioMegatronModelPT.restore_from(nemo_file, map_location=torch.device("cpu")), out_dir)


def check_export(model, out_dir: Union[str, Path]) -> str:
    """A one-line report that ``transformers``' model in ``out_dir`` gives ``model``'s outputs on a
    padded sample batch, field by field; a ``ValueError`` naming the output where it does not."""
    from biomegatron_nemo.export.onnx import sample_inputs

    transformers = transformers_module()
    config = json.loads((Path(out_dir) / "config.json").read_text())
    hf_model = getattr(transformers, config["architectures"][0]).from_pretrained(str(out_dir)).eval()
    batch = sample_inputs(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ours = model(**batch)
            theirs = hf_model(**{k: v.cpu() for k, v in batch.items()})
    finally:
        model.train(was_training)
    real = batch["attention_mask"].bool().cpu()
    worst = 0.0
    for field, tensor in ours.export_tensors().items():
        name = next(n for n in type(ours).hf_names[field] if getattr(theirs, n, None) is not None)
        mine, other = tensor.float().cpu(), getattr(theirs, name).float()
        if type(ours).per_position(field):
            mine, other = mine[real], other[real]
        worst = max(worst, float((mine - other).abs().max()))
        if worst > CHECK_TOLERANCE:
            raise ValueError(f"{out_dir}: transformers' {name} differs from this model's {field} by {worst:.3g} "
                             f"(more than {CHECK_TOLERANCE:g}): the export is not faithful")
    return f"checked: transformers' outputs equal this model's within {worst:.2g}"


def write_hf(model, out_dir: Union[str, Path], hf_class: str, state: Dict[str, torch.Tensor],
             heads_state: Dict[str, torch.Tensor], config_extra: Optional[Dict] = None) -> List[str]:
    """Our model → a Hugging Face folder ``transformers`` loads by itself: ``hf_class`` (a
    ``MegatronBert*`` class) with the encoder of ``state`` (the model's layout-free weights) and
    ``heads_state`` (HF names), the config plus
    ``config_extra`` (e.g. ``id2label``), safetensors weights and the tokenizer files."""
    transformers = transformers_module()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc = model.encoder_config
    tok = model.tokenizer
    model_type = "bert" if enc.layernorm_order == "post" else "megatron-bert"
    if model_type == "bert":  # the original BERT's classes: BertForMaskedLM, ...
        hf_class = hf_class.replace("MegatronBert", "Bert", 1)
    cls = getattr(transformers, hf_class)
    config_class = transformers.BertConfig if model_type == "bert" else transformers.MegatronBertConfig
    config = config_class(
        vocab_size=tok.vocab_size, hidden_size=enc.hidden_size, num_hidden_layers=enc.num_layers,
        num_attention_heads=enc.num_attention_heads, intermediate_size=enc.ffn_hidden_size,
        max_position_embeddings=enc.max_position_embeddings, type_vocab_size=enc.num_tokentypes,
        layer_norm_eps=enc.layernorm_epsilon, hidden_act="gelu", hidden_dropout_prob=enc.hidden_dropout,
        attention_probs_dropout_prob=enc.attention_dropout, pad_token_id=tok.pad_id, architectures=[hf_class],
        **(config_extra or {}))
    hf_model = cls(config)
    state = encoder_to_hf(state, enc.num_attention_heads, model_type)
    state.update(heads_state)
    if hasattr(hf_model, "cls") and "cls.predictions.bias" in state:  # tied to the embeddings in HF
        state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
        state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    result = hf_model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise ValueError(f"export to {hf_class}: missing {missing}, unused {result.unexpected_keys}")
    hf_model.save_pretrained(str(out))
    _write_tokenizer(tok, out, enc.max_position_embeddings)
    return [f"written: {out} ({hf_class}, {sum(p.numel() for p in hf_model.parameters()):,} parameters, "
            f"vocabulary {tok.vocab_size})"]




def _write_tokenizer(tok, out: Path, max_length: int) -> None:
    """``vocab.txt`` and the configs ``AutoTokenizer.from_pretrained`` reads (a BERT WordPiece tokenizer)."""
    if "vocab_file" not in tok.artifacts:
        raise ValueError("only WordPiece models export to Hugging Face (a SentencePiece vocabulary has no "
                         "BertTokenizer counterpart)")
    extra = list(tok.extra_special_tokens)
    # from the tokenizer itself: a restored model's vocabulary file lived in a folder NeMo has removed
    inverse = tok.inv_vocab
    words = [inverse[i] for i in range(tok.vocab_size) if inverse[i] not in extra]
    (out / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": not tok.cased, "model_max_length": max_length,
              **specials, **({"additional_special_tokens": extra} if extra else {})}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (out / "special_tokens_map.json").write_text(json.dumps({**specials, **(
        {"additional_special_tokens": extra} if extra else {})}, indent=1))
