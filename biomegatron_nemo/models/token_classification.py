"""``TokenClassificationModel``: named entity recognition on a BioMegatron encoder.

It owns the NER task around the shared encoder lifecycle of :class:`BioMegatronModelPT`:

* the label map — given (``label_map`` / ``label_map_file``) or built from ``train_ds.file`` —
  stored in the config and ``register_artifact``-ed as a file, so a restored ``.nemo`` needs no
  data files;
* the token-classification head and its loss (cross-entropy, class-weighted cross-entropy or
  soft Dice, the paper's section 5.5), optionally on a frozen encoder;
* entity-level F1 (conlleval) overall and per type for validation and test, on whole sentences
  after windows are mapped back to words, gathered over data-parallel ranks;
* :meth:`TokenClassificationModel.evaluate` (a CoNLL file → scores, and ``word gold pred`` output
  for conlleval) and :meth:`TokenClassificationModel.predict` (raw text → character spans).

Reading, alignment (``first_subtoken`` / ``all_subtokens``), windows and the way back to words
live in :mod:`biomegatron_nemo.data.token_classification`; chunking and scores in
:mod:`biomegatron_nemo.metrics.ner`. This module only glues them.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from biomegatron_nemo.data.conll import Sentence, read_conll, to_iob2, write_conll_predictions
from biomegatron_nemo.data.errors import DataFormatError, iter_lines
from biomegatron_nemo.data.token_classification import (
    ALIGNMENT_MODES,
    LabelMap,
    TokenClassificationDataset,
    continuation_tag,
)
from biomegatron_nemo.encoder.heads import IGNORE_INDEX, TokenClassificationHead
from biomegatron_nemo.encoder.losses import (
    balanced_class_weights,
    cross_entropy_normalizer,
    dice_loss,
    summed_cross_entropy,
)
from biomegatron_nemo.metrics.ner import entity_spans, ner_scores
from biomegatron_nemo.models.base import BioMegatronModelPT

LOSSES = ("cross_entropy", "weighted_cross_entropy", "dice")
DATA_SPLITS = {"train": "train_ds", "validation": "validation_ds", "test": "test_ds"}
DEFAULT_MAX_SEQ_LENGTH = 128
LABEL_MAP_KEY = "label_map_file"


class TokenClassificationModel(BioMegatronModelPT):
    """Encoder + :class:`TokenClassificationHead` for IOB-tagged NER.

    Config (beyond the base's ``tokenizer``, ``encoder``, ``language_model.nemo_file``, ``optim``):
    ``label_map`` (list of tags) or ``label_map_file`` (one tag a line), else built from
    ``train_ds.file``; ``labelling_mode`` (``first_subtoken`` | ``all_subtokens``);
    ``tag_scheme`` of the files (IOB1 | IOB2 | IOBES, converted to IOB2); ``window_overlap``;
    ``head: {num_layers, dropout, activation}``; ``loss: {name, class_weights, dice_smooth}``;
    ``freeze_encoder``; ``train_ds/validation_ds/test_ds: {file, max_seq_length, batch_size,
    num_workers, shuffle}``.
    """

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        cfg = _with_deferred_data(cfg)
        _check_config(cfg)
        self._label_map: Optional[LabelMap] = None
        self._class_weights: Optional[torch.Tensor] = None
        self._eval_rows: Dict[str, list] = {"val": [], "test": []}
        self.last_scores: Dict[str, Dict] = {}
        super().__init__(cfg=cfg, trainer=trainer)

    # ------------------------------------------------------------------ config and labels
    @property
    def _loss_cfg(self) -> DictConfig:
        return self.cfg.get("loss") or OmegaConf.create({})

    @property
    def labelling_mode(self) -> str:
        return self.cfg.get("labelling_mode", "first_subtoken")

    @property
    def label_map(self) -> LabelMap:
        """Built on first use: Lightning may set up data before the heads are built."""
        if self._label_map is None:
            self._label_map = self._setup_label_map()
        return self._label_map

    def _setup_label_map(self) -> LabelMap:
        labels = list(self.cfg.get("label_map") or [])
        label_file = self.cfg.get(LABEL_MAP_KEY)
        if label_file:
            # the user's file, or the copy inside the unpacked .nemo when restoring
            label_file = self.register_artifact(LABEL_MAP_KEY, label_file)
            from_file = _read_label_file(label_file)
            if labels and LabelMap(labels).labels != LabelMap(from_file).labels:
                raise ValueError(f"label_map {labels} differs from {LABEL_MAP_KEY} {label_file}: {from_file}")
            labels = from_file
        if not labels:
            train_file = (self.cfg.get("train_ds") or {}).get("file")
            if not train_file:
                raise ValueError("label_map is not set and there is no train_ds.file to build it from")
            labels = LabelMap.from_sentences(self.read_sentences(train_file)).labels
        # all_subtokens labels continuation sub-tokens of a B-X word I-X, even if no I-X was seen
        labels = labels + [continuation_tag(t) for t in labels if t.startswith("B-") or t == "B"]
        label_map = LabelMap(labels)
        if not label_file:
            label_file = self.register_artifact(LABEL_MAP_KEY, self._write_label_file(label_map))
        with open_dict(self.cfg):
            self.cfg.label_map = list(label_map.labels)
            self.cfg[LABEL_MAP_KEY] = label_file
        return label_map

    def _write_label_file(self, label_map: LabelMap) -> str:
        # Lives until the model does: save_to copies it into the .nemo whenever that happens.
        folder = tempfile.mkdtemp(prefix="biomegatron_labels_")
        weakref.finalize(self, shutil.rmtree, folder, True)
        path = os.path.join(folder, "label_map.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(label_map.labels) + "\n")
        return path

    def read_sentences(self, path: str) -> List[Sentence]:
        return read_iob2(path, self.cfg.get("tag_scheme", "IOB2"))

    def check_known_tags(self, sentences: Sequence[Sentence]) -> None:
        """A tag the model was not trained with cannot be predicted nor scored fairly: refuse it."""
        known = self.label_map.label_to_id
        for s in sentences:
            for i, tag in enumerate(s.tags):
                if tag not in known:
                    # sentence lines are consecutive, one word a line
                    raise DataFormatError(s.source, s.line + i, f"tag {tag!r} (word {s.words[i]!r}) was never "
                                          f"seen in training; the model's labels are {self.label_map.labels}",
                                          field="tag")

    # ------------------------------------------------------------------ modules
    def configure_model(self) -> None:
        first_build = not self._modules_built
        super().configure_model()
        if first_build and self.cfg.get("freeze_encoder", False):
            self.encoder.requires_grad_(False)

    def build_heads(self) -> None:
        if not self.encoder.post_process:
            return
        head = self.cfg.get("head") or {}
        self.classifier = TokenClassificationHead(
            self.encoder.config.hidden_size, len(self.label_map), num_layers=int(head.get("num_layers", 1)),
            dropout=float(head.get("dropout", 0.1)), activation=head.get("activation", "gelu"))

    # ------------------------------------------------------------------ losses
    def class_weights(self) -> Optional[torch.Tensor]:
        """Weights of weighted_cross_entropy (None for the other losses)."""
        if self._loss_cfg.get("name", "cross_entropy") != "weighted_cross_entropy":
            return None
        if self._class_weights is None:
            weights = self._loss_cfg.get("class_weights", "auto")
            if weights in (None, "auto"):
                raise ValueError("loss.class_weights=auto is computed from the training data; set up "
                                 "train_ds (or give the weights as a list)")
            weights = list(weights)
            if len(weights) != len(self.label_map):
                raise ValueError(f"loss.class_weights has {len(weights)} values but there are "
                                 f"{len(self.label_map)} labels {self.label_map.labels}")
            self._class_weights = torch.tensor(weights, dtype=torch.float32)
        return self._class_weights.to(self.device)

    def _resolve_auto_class_weights(self, dataset: TokenClassificationDataset) -> None:
        # Stored back into the config: a restored or resumed model trains with the same weights.
        if self._loss_cfg.get("name") != "weighted_cross_entropy":
            return
        if self._loss_cfg.get("class_weights", "auto") not in (None, "auto"):
            return
        counts = [0] * len(self.label_map)
        for w in dataset.windows:
            for label in w.labels:
                if label != IGNORE_INDEX:
                    counts[label] += 1
        with open_dict(self.cfg):
            self.cfg.loss.class_weights = [round(x, 6) for x in balanced_class_weights(counts)]
        self._class_weights = None

    def loss_normalizers(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        weights = self.class_weights()
        return {"ner": self.data_parallel_normalizer(cross_entropy_normalizer(batch["labels"], weights))}

    def head_losses(self, hidden, batch, normalizers) -> Dict[str, torch.Tensor]:
        logits = self.classifier(hidden)
        self._last_logits = logits.detach()
        if self._loss_cfg.get("name", "cross_entropy") == "dice":
            return {"ner": dice_loss(logits, batch["labels"], float(self._loss_cfg.get("dice_smooth", 1.0)))}
        return {"ner": summed_cross_entropy(logits, batch["labels"], self.class_weights()) / normalizers["ner"]}

    # ------------------------------------------------------------------ validation / test F1
    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        loss = super().validation_step(batch, batch_idx, dataloader_idx)
        if not self.pipeline_parallel:
            self._collect_predictions("val", batch)
        return loss

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if self.pipeline_parallel:
            raise NotImplementedError("NER testing with pipeline parallelism is not supported; "
                                      "restore the .nemo with pipeline_model_parallel_size=1")
        losses = self.compute_losses(batch)
        loss = sum(losses.values())
        self._log_losses("test", losses, loss, batch)
        self._collect_predictions("test", batch)
        return loss

    def _collect_predictions(self, split: str, batch) -> None:
        labels = self._last_logits.argmax(-1).cpu()
        lengths = batch["attention_mask"].sum(-1).tolist()
        for wi, row, n in zip(batch["window_index"].tolist(), labels, lengths):
            self._eval_rows[split].append((wi, row[:n].tolist()))

    def on_validation_epoch_end(self) -> None:
        self._log_entity_f1("val", self._validation_dl)

    def on_test_epoch_end(self) -> None:
        self._log_entity_f1("test", self._test_dl)

    def _log_entity_f1(self, split: str, loader) -> None:
        rows, self._eval_rows[split] = self._eval_rows[split], []
        if self.trainer is not None and self.trainer.sanity_checking or loader is None:
            return
        rows = _gather_data_parallel(rows)
        dataset: TokenClassificationDataset = loader.dataset
        labels = dict(rows)  # windows the distributed sampler repeated count once
        values = dataset.word_values(list(labels.values()), list(labels))
        if len(values) < len(dataset.sentences):
            # e.g. limit_val_batches: scoring only the covered sentences is still exact for them
            self._warn_once(f"{split} F1 over {len(values)} of {len(dataset.sentences)} sentences "
                            "(the others were not fully predicted)")
        gold = [dataset.sentences[i].tags for i in sorted(values)]
        pred = [self.label_map.decode(values[i]) for i in sorted(values)]
        scores = ner_scores(gold, pred)
        self.last_scores[split] = scores
        metrics = {f"{split}_precision": scores["precision"], f"{split}_recall": scores["recall"]}
        metrics.update({f"{split}_f1_{t}": s["f1"] for t, s in scores["per_type"].items()})
        # identical on every rank after the gather, so averaging over ranks (sync_dist) keeps them
        self.log_dict({k: float(v) for k, v in metrics.items()}, sync_dist=True)
        self.log(f"{split}_f1", float(scores["f1"]), prog_bar=True, sync_dist=True)

    def _warn_once(self, message: str) -> None:
        from nemo.utils import logging

        if message not in getattr(self, "_warned", set()):
            object.__setattr__(self, "_warned", getattr(self, "_warned", set()) | {message})
            logging.warning(message)

    # ------------------------------------------------------------------ data
    def make_dataset(self, sentences: Sequence[Sentence], max_seq_length: Optional[int] = None
                     ) -> TokenClassificationDataset:
        max_seq_length = int(max_seq_length or self._inference_max_seq_length())
        limit = self.encoder_config.max_position_embeddings
        if max_seq_length > limit:
            raise ValueError(f"max_seq_length={max_seq_length} exceeds the encoder's "
                             f"max_position_embeddings={limit}")
        return TokenClassificationDataset(sentences, self.tokenizer, self.label_map, max_seq_length,
                                          mode=self.labelling_mode,
                                          window_overlap=int(self.cfg.get("window_overlap", 32)))

    def _inference_max_seq_length(self) -> int:
        for key in ("test_ds", "validation_ds", "train_ds"):
            section = self.cfg.get(key) or {}
            if section.get("max_seq_length"):
                return int(section["max_seq_length"])
        return DEFAULT_MAX_SEQ_LENGTH

    def _build_dataloader(self, data_config, split: str):
        if not data_config.get("file"):
            raise ValueError(f"{DATA_SPLITS[split]}.file is not set")
        sentences = self.read_sentences(data_config.file)
        self.check_known_tags(sentences)
        dataset = self.make_dataset(sentences, data_config.get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))
        if split == "train":
            self._resolve_auto_class_weights(dataset)
        return torch.utils.data.DataLoader(
            dataset, batch_size=int(data_config.get("batch_size", 32)),
            shuffle=bool(data_config.get("shuffle", split == "train")),
            num_workers=int(data_config.get("num_workers", 0)), collate_fn=dataset.collate_fn,
            drop_last=False)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _predict_windows(self, dataset: TokenClassificationDataset, batch_size: int
                         ) -> Tuple[List[int], List[List[int]], List[List[float]]]:
        """Label ids and their probabilities per position of every window, in eval mode."""
        if self.pipeline_parallel:
            raise NotImplementedError("inference with pipeline parallelism is not supported; "
                                      "restore the .nemo with pipeline_model_parallel_size=1")
        was_training = self.training
        self.eval()
        indices, label_rows, prob_rows = [], [], []
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                             collate_fn=dataset.collate_fn)
        try:
            for batch in loader:
                batch = {k: v.to(self.device) for k, v in batch.items()}
                probs = self.classifier(self.encode(batch)).float().softmax(-1)
                best, labels = probs.max(-1)
                for wi, lab, p, n in zip(batch["window_index"].tolist(), labels.cpu(), best.cpu(),
                                         batch["attention_mask"].sum(-1).tolist()):
                    indices.append(wi)
                    label_rows.append(lab[:n].tolist())
                    prob_rows.append(p[:n].tolist())
        finally:
            self.train(was_training)
        return indices, label_rows, prob_rows

    def evaluate(self, file: str, output_file: Optional[str] = None, batch_size: int = 32,
                 max_seq_length: Optional[int] = None) -> Dict:
        """Entity-level scores (:func:`~biomegatron_nemo.metrics.ner.ner_scores`) on a CoNLL file.

        ``output_file``: ``word gold pred`` lines, a blank line between sentences (conlleval's input).
        """
        sentences = self.read_sentences(file)
        self.check_known_tags(sentences)
        dataset = self.make_dataset(sentences, max_seq_length)
        indices, label_rows, _ = self._predict_windows(dataset, batch_size)
        pred = dataset.predictions_to_tags(label_rows, indices)
        gold = [s.tags for s in sentences]
        if output_file:
            write_conll_predictions(output_file, [s.words for s in sentences], gold, pred)
        return ner_scores(gold, pred)

    def predict(self, texts: Sequence[str], batch_size: int = 32, max_seq_length: Optional[int] = None
                ) -> List[List[Dict]]:
        """Entities in raw texts: per text a list of ``{"type", "start", "end", "text", "score"}``.

        ``start``/``end`` are character offsets (``text[start:end]`` is the surface string);
        ``score`` is the mean probability of the predicted tags over the entity's words. Words
        are the tokenizer's own units (WordPiece: split at whitespace and punctuation, like the
        BC5CDR tokenization); texts longer than the window are split into overlapping windows.
        Empty or whitespace-only texts give ``[]``.
        """
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts; wrap a single text in a list")
        spans_per_text: Dict[int, List[Tuple[int, int]]] = {}
        sentences = []
        for ti, text in enumerate(texts):
            spans = _word_spans(self.tokenizer.encode(text)) if text.strip() else []
            if spans:
                spans_per_text[ti] = spans
                sentences.append(Sentence([text[s:e] for s, e in spans], ["O"] * len(spans)))
        results: List[List[Dict]] = [[] for _ in texts]
        if not sentences:
            return results
        dataset = self.make_dataset(sentences, max_seq_length)
        indices, label_rows, prob_rows = self._predict_windows(dataset, batch_size)
        tags = dataset.predictions_to_tags(label_rows, indices)
        probs = dataset.word_values(prob_rows, indices)
        for si, ti in enumerate(spans_per_text):
            spans, text = spans_per_text[ti], texts[ti]
            for etype, first, last in entity_spans(tags[si]):
                start, end = spans[first][0], spans[last][1]
                score = sum(probs[si][first:last + 1]) / (last - first + 1)
                results[ti].append({"type": etype, "start": start, "end": end, "text": text[start:end],
                                    "score": round(float(score), 6)})
        return results


def _check_config(cfg: DictConfig) -> None:
    mode = cfg.get("labelling_mode", "first_subtoken")
    if mode not in ALIGNMENT_MODES:
        raise ValueError(f"labelling_mode={mode!r}; choose one of {list(ALIGNMENT_MODES)}")
    loss = cfg.get("loss") or {}
    name = loss.get("name", "cross_entropy")
    if name not in LOSSES:
        raise ValueError(f"loss.name={name!r}; choose one of {list(LOSSES)}")
    if loss.get("class_weights") is not None and name != "weighted_cross_entropy":
        raise ValueError(f"loss.class_weights is set but loss.name={name!r} does not use it "
                         "(use weighted_cross_entropy)")


def _with_deferred_data(cfg) -> DictConfig:
    """A copy of ``cfg`` whose data sections set up in ``setup()``: reading them needs the
    tokenizer and label map, which exist only after ``ModelPT.__init__`` (KNOWN-TRAPS)."""
    cfg = copy.deepcopy(cfg) if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    with open_dict(cfg):
        for key in DATA_SPLITS.values():
            if cfg.get(key) is not None:
                cfg[key].defer_setup = True
    return cfg


def read_iob2(path: str, scheme: str = "IOB2") -> List[Sentence]:
    """Sentences of a CoNLL file with tags converted to IOB2 (conlleval chunk semantics)."""
    return [Sentence(s.words, to_iob2(s.tags), s.line, s.source) for s in read_conll(path, scheme)]


def _read_label_file(path: str) -> List[str]:
    labels = []
    for lineno, line in iter_lines(path):
        tag = line.strip()
        if not tag:
            continue
        if tag in labels:
            raise DataFormatError(path, lineno, f"label {tag!r} repeats", field="label")
        labels.append(tag)
    if not labels:
        raise DataFormatError(path, None, "no labels in label map file")
    return labels


def _word_spans(encoding) -> List[Tuple[int, int]]:
    """``(start, end)`` characters of each of the tokenizer's words, in order."""
    spans: Dict[int, List[int]] = {}
    for wid, (start, end) in zip(encoding.word_ids, encoding.offsets):
        if wid is None or end <= start:
            continue
        span = spans.setdefault(wid, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    return [tuple(spans[w]) for w in sorted(spans)]


def _gather_data_parallel(rows: list) -> list:
    """All data-parallel ranks' rows on every rank (each scored the whole set identically)."""
    from megatron.core import parallel_state

    if not (torch.distributed.is_initialized() and parallel_state.model_parallel_is_initialized()):
        return rows
    if parallel_state.get_data_parallel_world_size() == 1:
        return rows
    gathered = [None] * parallel_state.get_data_parallel_world_size()
    torch.distributed.all_gather_object(gathered, rows, group=parallel_state.get_data_parallel_group())
    return [r for part in gathered for r in part]
