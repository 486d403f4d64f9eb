"""The systems the side-by-side step benchmarks compare (``throughput.py``, ``memory.py``), built in
one place: our model and its Hugging Face peer of equal size for a task and preset, the synthetic
batch both get, each one's loss of it, and the timed step (forward, + backward and a fused AdamW
step in train mode, under bf16 autocast when asked).
"""

from __future__ import annotations

from pathlib import Path

import torch

#: task → the peer's transformers class
TASKS = {"pretrain": "MegatronBertForMaskedLM", "ner": "BertForTokenClassification",
         "re": "BertForSequenceClassification", "qa": "BertForQuestionAnswering"}
NUM_LABELS = {"ner": 5, "re": 6, "qa": None, "pretrain": None}


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def vocab_file(size: int, folder: Path) -> Path:
    """A WordPiece vocabulary of ``size`` entries (the models need one; the batch is synthetic)."""
    path = folder / "vocab.txt"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(size - 5)]
    path.write_text("\n".join(words) + "\n")
    return path


def build_ours(args, vocab_file):
    from omegaconf import OmegaConf

    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from biomegatron_nemo.models.question_answering import QuestionAnsweringModel
    from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    # memory.py's --vocab-multiple: Megatron pads the vocabulary rows to a multiple of 128
    multiple = getattr(args, "vocab_multiple", 128)
    cfg = {"tokenizer": {"vocab_file": str(vocab_file)},
           "encoder": {"preset": args.preset, "hidden_dropout": 0.0, "attention_dropout": 0.0,
                       "make_vocab_size_divisible_by": multiple,
                       **({"recompute_granularity": "full"} if args.recompute else {})}}
    if args.task == "pretrain":
        return BioMegatronPretrainingModel(OmegaConf.create(cfg))
    cfg["head"] = {"num_layers": 1, "dropout": 0.0}
    if args.task == "ner":
        return TokenClassificationModel(OmegaConf.create({**cfg, "label_map": ["O", "B-X", "I-X", "B-Y", "I-Y"]}))
    if args.task == "re":
        return SequenceClassificationModel(OmegaConf.create({**cfg, "pooling": "pooler",
                                                             "label_map": [f"c{i}" for i in range(6)]}))
    return QuestionAnsweringModel(OmegaConf.create(cfg))


def build_peer(args, enc, vocab_size: int):
    import transformers

    config_class = transformers.MegatronBertConfig if args.task == "pretrain" else transformers.BertConfig
    config = config_class(vocab_size=vocab_size, hidden_size=enc.hidden_size,
                          num_hidden_layers=enc.num_layers, num_attention_heads=enc.num_attention_heads,
                          intermediate_size=enc.ffn_hidden_size, max_position_embeddings=enc.max_position_embeddings,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                          **({"num_labels": NUM_LABELS[args.task]} if NUM_LABELS[args.task] else {}))
    peer = getattr(transformers, TASKS[args.task])(config)
    if args.recompute:
        peer.gradient_checkpointing_enable()  # each layer's input kept, the layer rerun in the backward
    return peer


def batch_for(args, vocab: int):
    g = torch.Generator().manual_seed(0)
    b, s = args.batch_size, args.seq_len
    ids = torch.randint(5, vocab, (b, s), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones(b, s, dtype=torch.long),
             "token_type_ids": torch.zeros(b, s, dtype=torch.long)}
    if args.task == "pretrain":
        mask = torch.rand(b, s, generator=g) < 0.15
        batch.update(lm_labels=torch.where(mask, ids, torch.full_like(ids, -100)), loss_mask=mask.long())
    elif args.task == "ner":
        batch["labels"] = torch.randint(0, 5, (b, s), generator=g)
    elif args.task == "re":
        batch["labels"] = torch.randint(0, 6, (b,), generator=g)
    else:
        batch.update(start_positions=torch.randint(0, s, (b,), generator=g),
                     end_positions=torch.randint(0, s, (b,), generator=g))
    return {k: v.to(device()) for k, v in batch.items()}


def peer_loss(args, peer, batch):
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    if args.task == "pretrain":
        return peer(**inputs, labels=batch["lm_labels"]).loss
    if args.task in ("ner", "re"):
        return peer(**inputs, labels=batch["labels"]).loss
    return peer(**inputs, start_positions=batch["start_positions"], end_positions=batch["end_positions"]).loss


def make_step(args, model, loss_of):
    """One timed unit: forward (+ backward + AdamW step in train mode), synchronised."""
    # torch's fused AdamW: what both use by default (ours: optim.fused; HF Trainer: adamw_torch_fused)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True) if args.mode == "train" else None
    dtype = torch.bfloat16 if args.precision == "bf16" else None

    def step():
        with torch.autocast(device(), dtype=torch.bfloat16, enabled=dtype is not None):
            if optimizer is None:
                with torch.no_grad():
                    loss_of()
            else:
                loss = loss_of()
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device() == "cuda":
            torch.cuda.synchronize()

    model.train(args.mode == "train")
    return step


def vocab_of(args) -> int:
    """Rows of the embedding: the vocabulary file, plus the entity markers the RE model adds."""
    from biomegatron_nemo.data.chemprot import CHEMPROT_SPECIAL_TOKENS

    return args.vocab_size + (len(CHEMPROT_SPECIAL_TOKENS) if args.task == "re" else 0)




def our_loss(model, batch):
    """Our model's training loss of ``batch``: its forward, then its loss."""
    return sum(model.loss(model(**model.forward_inputs(batch)), batch).values())
