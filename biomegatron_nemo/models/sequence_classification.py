"""``SequenceClassificationModel``: relation extraction (ChemProt) and other sentence classification.

It owns the RE task on top of :class:`~biomegatron_nemo.models.classification.ClassificationTaskModel`
(label map, losses, frozen encoder, gathering):

* the entity markers (``@CHEMICAL$``, ``@GENE$``, ``@CHEM-GENE$``, BLUE's masks) as single special
  tokens, added to the tokenizer config (so the ``.nemo`` records them) and, for a pretrained
  encoder whose vocabulary lacks them, as new embedding rows (old rows kept);
* the classifier over [CLS] (or a tanh pooler), 1–2 layers of configurable size;
* micro-F1 over the positive classes (the negative class ``false`` left out, as BLUE scores
  ChemProt), per-class P/R/F1 and the confusion matrix for validation and test;
* the decoding of the rows the shared inference loop gives (every class's probability):
  :meth:`evaluate` (a TSV file → scores and ``id<TAB>label<TAB>probability`` predictions) and
  :meth:`predict` / :meth:`predict_spans` (sentences, or raw text with the two entities' character
  spans → label and every class's probability).

Reading, marker checks and truncation around the markers live in :mod:`biomegatron_nemo.data.chemprot`;
scores in :mod:`biomegatron_nemo.metrics.classification`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from biomegatron_nemo.common.arguments import check_input_file, check_list, check_positive_int, check_text
from biomegatron_nemo.common.config import option, section
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.data.batching import ClassBalancedSampler
from biomegatron_nemo.data.chemprot import (
    CHEMPROT_NEGATIVE,
    CHEMPROT_SPECIAL_TOKENS,
    MISSING_MARKER_POLICIES,
    ClassificationExample,
    RelationDataConfig,
    SequenceClassificationDataset,
    read_classification_tsv,
)
from biomegatron_nemo.data.token_classification import LabelMap
from biomegatron_nemo.encoder.heads import POOLINGS, SequenceClassificationHead
from biomegatron_nemo.metrics.classification import classification_scores, format_classification_table
from biomegatron_nemo.models.classification import ClassificationModelConfig, ClassificationTaskModel
from biomegatron_nemo.models.outputs import SequenceClassifierOutput


@dataclass
class SequenceClassificationModelConfig(ClassificationModelConfig):
    """``model:`` of :class:`SequenceClassificationModel`."""

    entity_markers: List[str] = option(doc="entity masks, each one token (added to the vocabulary when new)",
                                       factory=lambda: list(CHEMPROT_SPECIAL_TOKENS))
    pair_marker: Optional[str] = option("@CHEM-GENE$", "a marker that stands for both entities; null: none")
    missing_markers: str = option("error", "a sentence without two markers: error (naming file and line) "
                                           "or warn (kept and counted)", choices=MISSING_MARKER_POLICIES)
    negative_label: Optional[str] = option(CHEMPROT_NEGATIVE, "the class left out of micro-F1; null: none")
    pooling: str = option("cls", "what the classifier reads: the [CLS] vector, or it through a tanh pooler",
                          choices=POOLINGS)
    train_ds: Optional[RelationDataConfig] = section(RelationDataConfig, "training data: [id<TAB>]sentence<TAB>label")
    validation_ds: Optional[RelationDataConfig] = section(RelationDataConfig, "validation data (micro-F1 per epoch)")
    test_ds: Optional[RelationDataConfig] = section(RelationDataConfig, "test data")

    def check(self) -> None:
        super().check()
        if not self.entity_markers:
            raise ConfigError("needs at least one marker", key="entity_markers")
        if self.pair_marker is not None and self.pair_marker not in self.entity_markers:
            raise ConfigError(f"{self.pair_marker!r} is not one of entity_markers", key="pair_marker")


class SequenceClassificationModel(ClassificationTaskModel):
    """Encoder + :class:`SequenceClassificationHead`; config :class:`SequenceClassificationModelConfig`."""

    config_class = SequenceClassificationModelConfig
    loss_name = "re"

    # ------------------------------------------------------------------ tokenizer and labels
    def _setup_tokenizer(self):
        # The markers must be single tokens; in the tokenizer config they are saved with the .nemo.
        config = self.config
        markers = [m for m in config.entity_markers if m not in config.tokenizer.special_tokens]
        if markers:
            self.set_config("tokenizer.special_tokens", list(config.tokenizer.special_tokens) + markers)
        return super()._setup_tokenizer()

    def training_labels(self, path: str) -> List[str]:
        return sorted({ex.label for ex in read_classification_tsv(path)})

    def make_label_map(self, labels: Sequence[str]) -> LabelMap:
        return LabelMap(labels, outside=None)

    # ------------------------------------------------------------------ modules and losses
    def build_heads(self) -> None:
        if self.encoder.post_process:
            self.classifier = SequenceClassificationHead(self.encoder.config.hidden_size, len(self.label_map),
                                                         self.config.head, pooling=self.config.pooling)

    def pretrained_head_weights(self, state):
        """A tanh pooler starts from the checkpoint's (BERT's pooler, trained with its next-sentence
        head), as Hugging Face's ``BertForSequenceClassification`` does."""
        if self.config.pooling != "pooler" or "binary_head.pooler.dense.weight" not in state or not self.encoder.post_process:
            return {}
        return {"classifier.pooler.weight": state["binary_head.pooler.dense.weight"],
                "classifier.pooler.bias": state["binary_head.pooler.dense.bias"]}

    def head_outputs(self, hidden, attention_mask) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.classifier(hidden))

    def output_rows(self, batch, output: SequenceClassifierOutput):
        """Per example: every class's probability."""
        yield from zip(batch["example_index"].tolist(), output.logits.float().softmax(-1).cpu().tolist())

    # ------------------------------------------------------------------ data
    def read_examples(self, path: str, labelled: bool = True) -> List[ClassificationExample]:
        """Rows of a TSV file; labels outside the model's label map are refused by line."""
        return read_classification_tsv(path, labels=self.label_map.labels if labelled else None,
                                       has_label=labelled)

    def make_dataset(self, examples: Sequence[ClassificationExample],
                     max_seq_length: Optional[int] = None) -> SequenceClassificationDataset:
        config = self.config
        max_seq_length = max_seq_length or (config.train_ds or RelationDataConfig()).max_seq_length
        limit = self.encoder_config.max_position_embeddings
        if max_seq_length > limit:
            raise ValueError(f"max_seq_length={max_seq_length} exceeds the encoder's max_position_embeddings={limit}")
        return SequenceClassificationDataset(examples, self.tokenizer, self.label_map.labels, max_seq_length,
                                             markers=config.entity_markers, pair_marker=config.pair_marker,
                                             missing_markers=config.missing_markers)

    def build_dataloader(self, data_config: RelationDataConfig, split: str):
        if not data_config.file:
            if split == "train":
                raise ConfigError("is required for training", key="train_ds.file", where=type(self).__name__)
            return None
        dataset = self.make_dataset(self.read_examples(data_config.file), data_config.max_seq_length)
        sampler = None
        if split == "train":
            self.resolve_auto_class_weights(dataset.label_targets())
            if data_config.oversample:
                sampler = ClassBalancedSampler(dataset.label_targets(), self.config.seed, **self.data_parallel_ranks())
        return self.make_dataloader(dataset, data_config, split, sampler)

    # ------------------------------------------------------------------ validation / test scores
    def on_validation_epoch_end(self) -> None:
        self._log_scores("val", self._validation_dl)

    def on_test_epoch_end(self) -> None:
        self._log_scores("test", self._test_dl)

    def scores(self, gold: Sequence[str], pred: Sequence[str]) -> Dict:
        """Micro P/R/F1 over the positive classes, per class, confusion matrix, accuracy."""
        return classification_scores(gold, pred, negative_label=self.config.negative_label,
                                     labels=self.label_map.labels)

    def _log_scores(self, split: str, loader) -> None:
        rows = self.take_eval_rows(split)
        if rows is None or loader is None:
            return
        dataset: SequenceClassificationDataset = self.examples_of(loader)
        order = sorted(rows)
        best = [max(range(len(rows[i])), key=rows[i].__getitem__) for i in order]
        scores = self.scores([dataset.examples[i].label for i in order], self.label_map.decode(best))
        self.last_scores[split] = scores
        metrics = {f"{split}_precision": scores["precision"], f"{split}_recall": scores["recall"],
                   f"{split}_accuracy": scores["accuracy"]}
        for c, s in scores["per_class"].items():
            metrics.update({f"{split}_{m}_{c}": s[m] for m in ("precision", "recall", "f1")})
        # identical on every rank after the gather, so averaging over ranks (sync_dist) keeps them
        self.log_dict({k: float(v) for k, v in metrics.items()}, sync_dist=True)
        self.log(f"{split}_micro_f1", float(scores["f1"]), prog_bar=True, sync_dist=True)
        self._log_confusion_matrix(split, scores)

    def _log_confusion_matrix(self, split: str, scores: Dict) -> None:
        """The per-class table and confusion matrix of this epoch, as text in TensorBoard."""
        logger = self.trainer.logger if self._trainer is not None else None
        experiment = getattr(logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_text") and self.trainer.is_global_zero:
            table = format_classification_table(scores)
            experiment.add_text(f"{split}_confusion_matrix", f"```\n{table}\n```", self.trainer.global_step)

    # ------------------------------------------------------------------ Hugging Face
    def hf_export(self, state):
        return ("MegatronBertForSequenceClassification", self.classifier.hf_tensors(state, "classifier"),
                self.hf_label_config())

    # ------------------------------------------------------------------ inference
    def class_probabilities(self, dataset: SequenceClassificationDataset, batch_size: int = 32) -> torch.Tensor:
        """``[n, num_labels]`` probabilities of every example."""
        rows = self.infer(dataset, batch_size)
        return torch.tensor([rows[i] for i in range(len(dataset))], dtype=torch.float32)

    def evaluate(self, file: str, output_file: Optional[str] = None, batch_size: int = 32,
                 max_seq_length: Optional[int] = None) -> Dict:
        """Scores (:meth:`scores`) on a labelled ``[id<TAB>]sentence<TAB>label`` file.

        ``output_file``: ``id<TAB>label<TAB>probability`` lines (read by ``python -m
        biomegatron_nemo.analysis.evaluate re``). Truncations and marker counts are in the
        returned ``data`` entry.
        """
        file = check_input_file(file, "evaluate")
        check_positive_int(batch_size, "evaluate", "batch_size")
        dataset = self.make_dataset(self.read_examples(file), max_seq_length)
        probs = self.class_probabilities(dataset, batch_size)
        best, ids = probs.max(-1)
        pred = self.label_map.decode(ids.tolist())
        scores = self.scores([ex.label for ex in dataset.examples], pred)
        scores["data"] = {"truncated": dataset.n_truncated, "markers_cut": dataset.n_markers_cut,
                          "missing_markers": dataset.n_missing_markers}
        if output_file:
            with open(output_file, "w", encoding="utf-8") as f:
                for ex, label, p in zip(dataset.examples, pred, best.tolist()):
                    f.write(f"{ex.guid}\t{label}\t{p:.6f}\n")
        return scores

    def predict(self, sentences: Sequence[str], batch_size: int = 32) -> List[Dict]:
        """Per sentence (entities masked with the markers): ``{"label", "probability",
        "probabilities": {label: p}}``."""
        sentences = check_list(sentences, "predict", "sentences", "strings")
        check_positive_int(batch_size, "predict", "batch_size")
        for i, text in enumerate(sentences):
            if not check_text(text, "predict", f"sentences[{i}]").strip():
                raise ValueError(f"predict: sentences[{i}] is empty; expected text with two entity markers")
        examples = [ClassificationExample(f"text:{i}", t.strip(), None, i + 1, "<predict>") for i, t in enumerate(sentences)]
        probs = self.class_probabilities(self.make_dataset(examples), batch_size)
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": self.label_map.labels[best], "probability": round(row[best], 6),
                        "probabilities": {lab: round(p, 6) for lab, p in zip(self.label_map.labels, row)}})
        return out

    def predict_spans(self, items: Sequence[Tuple[str, Tuple[int, int], Tuple[int, int]]],
                      markers: Tuple[str, str] = ("@CHEMICAL$", "@GENE$"), batch_size: int = 32) -> List[Dict]:
        """Raw text with the character spans ``(start, end)`` of its two entities: the spans are
        replaced by ``markers`` (BLUE's masking), then classified as :meth:`predict` does."""
        items = check_list(items, "predict_spans", "items", "(text, (start, end), (start, end)) triples")
        for i, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 3:
                raise TypeError(f"predict_spans: items[{i}] is {type(item).__name__}; expected a "
                                "(text, (start, end), (start, end)) triple")
            check_text(item[0], "predict_spans", f"items[{i}][0]")
        return self.predict([mask_entities(text, first, second, markers) for text, first, second in items],
                            batch_size)


def mask_entities(text: str, first: Tuple[int, int], second: Tuple[int, int], markers: Tuple[str, str]) -> str:
    """``text`` with the two entity spans replaced by their markers (spans must not overlap)."""
    spans = sorted([(tuple(first), markers[0]), (tuple(second), markers[1])])
    (a, b), (c, d) = spans[0][0], spans[1][0]
    if not (0 <= a < b <= c < d <= len(text)):
        raise ValueError(f"entity spans {first} and {second} must be non-empty, inside the text "
                         f"(length {len(text)}) and not overlap")
    return f"{text[:a]}{spans[0][1]}{text[b:c]}{spans[1][1]}{text[d:]}"
