"""Convert checkpoints: Megatron-LM, NeMo 1.x and Hugging Face in; this library's ``.nemo`` and
Hugging Face out.

    python -m biomegatron_nemo.export.convert --from megatron-lm --to nemo CHECKPOINT_DIR out.nemo \\
        --vocab-file vocab.txt [--cased]
    python -m biomegatron_nemo.export.convert --from nemo1 --to nemo biomegatron.nemo out.nemo [--encoder-only]
    python -m biomegatron_nemo.export.convert --from hf --to nemo HF_DIR out.nemo
    python -m biomegatron_nemo.export.convert --from nemo --to hf model.nemo HF_DIR

Every conversion prints what it mapped and fails loudly, naming the tensors, on anything it cannot
place, that is missing, or whose shape disagrees — nothing is guessed or silently dropped. A source
without a masked-LM head (a published ``BertModel``, the commonest form) converts as it is, its
head starting from random weights; a task model's heads are left out and listed. The
result of ``--to nemo`` is a :class:`~biomegatron_nemo.models.pretraining.BioMegatronPretrainingModel`
(encoder, masked-LM head, sentence-order head when the source has one) whose ``.nemo`` any task
model takes as ``language_model.pretrained`` (which also takes the checkpoint itself, converting it
on the way). The same as Python: :func:`import_checkpoint`, and
:func:`~biomegatron_nemo.export.hf.export_hf` for the way out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from typing import List, Optional

from omegaconf import OmegaConf

from biomegatron_nemo.checkpoints.pretrained import convert_checkpoint
from biomegatron_nemo.export.hf import export_nemo_hf
from biomegatron_nemo.tokenizers.wordpiece import looks_cased

SOURCES = ("megatron-lm", "nemo1", "hf")


def _pretraining_model(converted):
    """The pretraining model holding ``converted``: heads the source lacks keep their random
    initialisation, and the summary says which."""
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    cfg = OmegaConf.create({"tokenizer": converted.tokenizer, "encoder": converted.encoder,
                            "binary_head": converted.binary_head})
    model = BioMegatronPretrainingModel(cfg)
    state = dict(converted.state)
    if not converted.binary_head and "binary_head.pooler.dense.weight" in state:
        del state["binary_head.pooler.dense.weight"], state["binary_head.pooler.dense.bias"]
        converted.summary.append("left out: the pooler (the pretraining model uses it only under a sentence-order "
                                 "head; name the checkpoint itself for a classifier that reads a pooler)")
    own = model.layout_free_state_dict()
    head = sorted(k for k in own if k.startswith("mlm_head.") and k not in state)
    if head and not any(k.startswith("mlm_head.") for k in state):  # no head at all (a part missing: an error)
        converted.summary.append(f"the source has no masked-LM head: its {len(head)} tensors start from random "
                                 "weights (fine-tuning uses the encoder only; continued pretraining trains it)")
        state.update({k: own[k] for k in head})
    bad = [f"{k}: source {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{len(bad)} tensor(s) do not fit the encoder the checkpoint describes, e.g. {bad[0]}")
    model.load_layout_free_state_dict(state, strict=True)
    return model


def import_checkpoint(source: str, path: str, out: str, vocab_file: Optional[str] = None,
                      cased: Optional[bool] = None, encoder_only: bool = False,
                      num_attention_heads: Optional[int] = None) -> List[str]:
    """Convert ``path`` (``source``: megatron-lm, nemo1 or hf) into our ``.nemo`` at ``out``;
    returns the summary lines."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    with tempfile.TemporaryDirectory() as tmp:
        converted = convert_checkpoint(source, path, tmp, vocab_file, cased, num_attention_heads, encoder_only)
        if converted.tokenizer["cased"] is None:
            converted.tokenizer["cased"] = looks_cased(converted.tokenizer["vocab_file"])
            converted.summary.append("casing: read from the vocabulary (the checkpoint does not say; --cased or "
                                     "--uncased decides)")
        model = _pretraining_model(converted)
        model.save_to(out)
    tokenizer = converted.tokenizer
    return converted.summary + [f"tokenizer: WordPiece {'cased' if tokenizer['cased'] else 'uncased'}"
                                f" from {vocab_file or path}", f"written: {out}"]


def parse_args(argv=None, prog=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog or "python -m biomegatron_nemo.export.convert",
                                description=__doc__.split("\n\n")[0],
                                epilog="example: --from megatron-lm --to nemo BioMegatron345mUncased/ biomegatron.nemo "
                                       "--vocab-file vocab.txt")
    p.add_argument("--from", dest="source", choices=SOURCES + ("nemo",), required=True,
                   help="megatron-lm, nemo1 or hf (with --to nemo); nemo (with --to hf)")
    p.add_argument("--to", dest="target", choices=("nemo", "hf"), required=True)
    p.add_argument("input", help="the checkpoint: folder, file or .nemo")
    p.add_argument("output", help="the .nemo to write (--to nemo) or the folder (--to hf)")
    p.add_argument("--vocab-file", help="WordPiece vocabulary (required for Megatron-LM checkpoints)")
    case = p.add_mutually_exclusive_group()
    case.add_argument("--cased", dest="cased", action="store_true", default=None, help="a cased vocabulary")
    case.add_argument("--uncased", dest="cased", action="store_false", help="an uncased vocabulary (lower-cases)")
    p.add_argument("--encoder-only", action="store_true",
                   help="keep the encoder only: every head of the source (masked LM, sentence order, a task "
                        "model's) is left out and listed; the .nemo's masked-LM head then starts from random weights. "
                        "Without it, heads the source lacks start from random weights, and a task model's heads are "
                        "left out and listed")
    p.add_argument("--num-attention-heads", type=int, help="megatron-lm: when the checkpoint has no args")
    args = p.parse_args(argv)
    if (args.source == "nemo") != (args.target == "hf"):
        p.error("--to hf takes --from nemo; --to nemo takes --from megatron-lm, nemo1 or hf")
    return args


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    try:
        if args.target == "hf":
            lines = export_nemo_hf(args.input, args.output)
        else:
            lines = import_checkpoint(args.source, args.input, args.output, args.vocab_file, args.cased,
                                      args.encoder_only, args.num_attention_heads)
    except (ValueError, FileNotFoundError) as err:  # UnsafeCheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
