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
                       **({"packed_sequences": True} if getattr(args, "packed", False) else {}),
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


def batch_for(args, vocab: int, lengths=None):
    """The synthetic batch both systems get: ``batch_size × seq_len`` real tokens, or one example per
    entry of ``lengths`` padded to the longest (labels, masked positions and answers at real tokens)."""
    g = torch.Generator().manual_seed(0)
    if lengths is None:
        lengths = [args.seq_len] * args.batch_size
    b, s = len(lengths), max(lengths)
    real = torch.arange(s)[None, :] < torch.tensor(lengths)[:, None]
    ids = torch.where(real, torch.randint(5, vocab, (b, s), generator=g), 0)
    batch = {"input_ids": ids, "attention_mask": real.long(), "token_type_ids": torch.zeros(b, s, dtype=torch.long)}
    if args.task == "pretrain":
        mask = (torch.rand(b, s, generator=g) < 0.15) & real
        batch.update(lm_labels=torch.where(mask, ids, torch.full_like(ids, -100)), loss_mask=mask.long())
    elif args.task == "ner":
        batch["labels"] = torch.where(real, torch.randint(0, 5, (b, s), generator=g), -100)
    elif args.task == "re":
        batch["labels"] = torch.randint(0, 6, (b,), generator=g)
    else:
        ends = torch.tensor(lengths)
        batch.update(start_positions=(torch.rand(b, generator=g) * ends).long(),
                     end_positions=(torch.rand(b, generator=g) * ends).long())
    return {k: v.to(device()) for k, v in batch.items()}


def real_lengths(data: str, seq_len: int):
    """Sub-token lengths of a real training set in BERT uncased WordPiece, [CLS] and [SEP] included,
    capped at ``seq_len`` (a longer example is windowed or truncated), from the shared data:
    ``bc5cdr`` (BC5CDR-chem's training sentences), ``chemprot`` (ChemProt's dev sentences, the
    one complete split there, entity markers one token each), ``squad`` (the windows of the first
    2,000 SQuAD v1.1 dev questions, stride 128) or ``pubmed`` (the first 4,000 masked-LM samples of
    ``seq_len`` that the pretraining loader draws from the shared PubMed corpus: megatron-core's
    BERT samples, sentence pairs that stop short of ``seq_len`` at a document's end and, by design,
    in 10% of samples)."""
    from side_by_side import SHARED, VOCAB

    from biomegatron_nemo.data.conll import read_iob2
    from biomegatron_nemo.tokenizers import WordPieceTokenizer

    tokenizer = WordPieceTokenizer(str(VOCAB), cased=False)
    if data == "bc5cdr":
        sentences = read_iob2(str(SHARED / "ner" / "BC5CDR-chem" / "train.tsv"))
        return [min(seq_len, 2 + len(tokenizer.encode_words(s.words).ids)) for s in sentences]
    if data == "chemprot":
        rows = (SHARED / "chemprot" / "dev.tsv").read_text(encoding="utf-8").splitlines()
        texts = [row.split("\t")[1].replace("@CHEMICAL$", "x").replace("@GENE$", "x") for row in rows]
        return [min(seq_len, 2 + len(encoding.ids)) for encoding in tokenizer.encode_batch(texts)]
    if data == "squad":
        from biomegatron_nemo.data.squad import QADataset, read_squad

        examples = read_squad(SHARED / "squad" / "dev-v1.1.json")[:2000]
        return QADataset(examples, tokenizer, max_seq_length=seq_len, doc_stride=128).lengths()
    if data == "pubmed":
        return pretraining_lengths(tokenizer, SHARED / "pubmed" / "pubmed_corpus.txt.gz", seq_len)
    raise ValueError(f"unknown data {data!r}: bc5cdr, chemprot, squad or pubmed")


def pretraining_lengths(tokenizer, corpus: Path, seq_len: int, samples: int = 4000):
    """Real tokens of the first ``samples`` masked-LM samples the pretraining loader draws from
    ``corpus`` (preprocessed into a temporary folder; needs torch.distributed initialised)."""
    import tempfile

    from omegaconf import OmegaConf

    from biomegatron_nemo.data.preprocess import preprocess_corpus
    from biomegatron_nemo.data.pretraining import PretrainingCollator, build_pretraining_datasets

    with tempfile.TemporaryDirectory() as tmp:
        preprocess_corpus([corpus], Path(tmp) / "corpus", tokenizer, workers=2, progress=False)
        cfg = OmegaConf.create({"data_prefix": str(Path(tmp) / "corpus"), "seq_length": seq_len,
                                "split": "100,0,0", "path_to_cache": str(Path(tmp) / "cache")})
        dataset = build_pretraining_datasets(cfg, tokenizer, [samples, 0, 0])[0]
        collate = PretrainingCollator(tokenizer.pad_id, tokenizer.sep_id)
        return collate([dataset[i] for i in range(samples)])["attention_mask"].sum(dim=1).tolist()


def length_batches(lengths, batch_size: int, grouped: bool, seed: int = 0):
    """One epoch's batches of ``lengths`` as the training loaders cut them: similar lengths together
    (our default, HF Trainer's ``group_by_length``) or in a random order."""
    from biomegatron_nemo.data.batching import length_grouped_order

    if grouped:
        order = length_grouped_order(lengths, batch_size, seed)
    else:
        order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    return [[lengths[i] for i in order[k:k + batch_size]] for k in range(0, len(order) - batch_size + 1, batch_size)]


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
