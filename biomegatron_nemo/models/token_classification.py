"""``TokenClassificationModel``: named entity recognition on a BioMegatron encoder.

It owns the NER task on top of :class:`~biomegatron_nemo.models.classification.ClassificationTaskModel`
(label map, losses, frozen encoder, gathering):

* the tags of a CoNLL training file, with the ``I-`` continuations ``all_subtokens`` needs;
* the token-classification head on every position;
* entity-level F1 (conlleval) overall and per type for validation and test, on whole sentences
  after windows are mapped back to words, gathered over data-parallel ranks;
* the decoding of the rows the shared inference loop gives (label ids and probabilities per
  sub-token of every window) back to words, tags and entities:
  :meth:`TokenClassificationModel.evaluate` (a CoNLL file → scores, and ``word gold pred`` output
  for conlleval) and :meth:`TokenClassificationModel.predict` (raw text → character spans).

Reading, alignment (``first_subtoken`` / ``all_subtokens``), windows and the way back to words
live in :mod:`biomegatron_nemo.data.token_classification`; chunking and scores in
:mod:`biomegatron_nemo.metrics.ner`. This module only glues them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from biomegatron_nemo.common.arguments import check_input_file, check_list, check_positive_int, check_text
from biomegatron_nemo.common.config import option, section
from biomegatron_nemo.common.errors import ConfigError, DataFormatError
from biomegatron_nemo.data.batching import FineTuningDataConfig
from biomegatron_nemo.data.conll import SCHEMES, Sentence, read_iob2, write_conll_predictions
from biomegatron_nemo.data.token_classification import (
    ALIGNMENT_MODES,
    LabelMap,
    TokenClassificationDataset,
    continuation_tag,
    word_spans,
)
from biomegatron_nemo.encoder.heads import TokenClassificationHead
from biomegatron_nemo.metrics.ner import entity_spans, ner_scores
from biomegatron_nemo.models.classification import ClassificationModelConfig, ClassificationTaskModel
from biomegatron_nemo.models.outputs import TokenClassifierOutput


@dataclass
class TokenClassificationModelConfig(ClassificationModelConfig):
    """``model:`` of :class:`TokenClassificationModel`."""

    labelling_mode: str = option("first_subtoken", "first_subtoken: a word's first sub-token carries its "
                                 "tag; all_subtokens: every sub-token is labelled", choices=ALIGNMENT_MODES)
    tag_scheme: str = option("IOB2", "tag scheme of the files (converted to IOB2)", choices=tuple(SCHEMES))
    window_overlap: int = option(32, "sub-tokens shared by consecutive windows of a long sentence")
    train_ds: Optional[FineTuningDataConfig] = section(FineTuningDataConfig, "training data")
    validation_ds: Optional[FineTuningDataConfig] = section(FineTuningDataConfig, "validation data (entity F1 per epoch)")
    test_ds: Optional[FineTuningDataConfig] = section(FineTuningDataConfig, "test data")

    def check(self) -> None:
        super().check()
        if self.window_overlap < 0:
            raise ConfigError(f"must be >= 0, got {self.window_overlap}", key="window_overlap")


class TokenClassificationModel(ClassificationTaskModel):
    """Encoder + :class:`TokenClassificationHead` for IOB-tagged NER; config:
    :class:`TokenClassificationModelConfig` (every key in ``docs/configuration.md``)."""

    config_class = TokenClassificationModelConfig
    loss_name = "ner"

    # ------------------------------------------------------------------ config and labels
    def training_labels(self, path: str) -> List[str]:
        return LabelMap.from_sentences(self.read_sentences(path)).labels

    def expand_labels(self, labels: List[str]) -> List[str]:
        # all_subtokens labels continuation sub-tokens of a B-X word I-X, even if no I-X was seen
        return labels + [continuation_tag(t) for t in labels if t.startswith("B-") or t == "B"]

    def read_sentences(self, path: str) -> List[Sentence]:
        return read_iob2(path, self.config.tag_scheme)

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
    def build_heads(self) -> None:
        if self.encoder.post_process:
            self.classifier = TokenClassificationHead(self.encoder.config.hidden_size, len(self.label_map),
                                                      self.config.head)

    def head_outputs(self, hidden, attention_mask) -> TokenClassifierOutput:
        return TokenClassifierOutput(logits=self.classifier(hidden))

    def output_rows(self, batch, output: TokenClassifierOutput):
        """Per window: the best label id and its probability at each real position."""
        best, labels = output.logits.float().softmax(-1).max(-1)
        for wi, lab, p, n in zip(batch["window_index"].tolist(), labels.cpu(), best.cpu(),
                                 batch["attention_mask"].sum(-1).tolist()):
            yield wi, (lab[:n].tolist(), p[:n].tolist())

    # ------------------------------------------------------------------ validation / test F1

    def on_validation_epoch_end(self) -> None:
        self._log_entity_f1("val", self._validation_dl)

    def on_test_epoch_end(self) -> None:
        self._log_entity_f1("test", self._test_dl)

    def _log_entity_f1(self, split: str, loader) -> None:
        rows = self.take_eval_rows(split)
        if rows is None or loader is None:
            return
        dataset: TokenClassificationDataset = self.examples_of(loader)
        values = dataset.word_values([labels for labels, _ in rows.values()], list(rows))
        if len(values) < len(dataset.sentences):
            # e.g. limit_val_batches: scoring only the covered sentences is still exact for them
            self.warn_once(f"{split} F1 over {len(values)} of {len(dataset.sentences)} sentences "
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

    # ------------------------------------------------------------------ data
    def make_dataset(self, sentences: Sequence[Sentence], max_seq_length: Optional[int] = None
                     ) -> TokenClassificationDataset:
        max_seq_length = max_seq_length or self._inference_max_seq_length()
        limit = self.encoder_config.max_position_embeddings
        if max_seq_length > limit:
            raise ValueError(f"max_seq_length={max_seq_length} exceeds the encoder's "
                             f"max_position_embeddings={limit}")
        return TokenClassificationDataset(sentences, self.tokenizer, self.label_map, max_seq_length,
                                          mode=self.config.labelling_mode, window_overlap=self.config.window_overlap)

    def _inference_max_seq_length(self) -> int:
        """The window length of the data the model was set up with (test, validation, then
        training data), else of its training config."""
        config = self.config
        sections = [s for s in (config.test_ds, config.validation_ds, config.train_ds) if s is not None]
        for data in sections:
            if data.file:
                return data.max_seq_length
        return (config.train_ds or FineTuningDataConfig()).max_seq_length

    def build_dataloader(self, data_config: FineTuningDataConfig, split: str):
        if not data_config.file:
            if split == "train":
                raise ConfigError("is required for training", key="train_ds.file", where=type(self).__name__)
            return None
        sentences = self.read_sentences(data_config.file)
        self.check_known_tags(sentences)
        dataset = self.make_dataset(sentences, data_config.max_seq_length)
        if split == "train":
            self.resolve_auto_class_weights([label for w in dataset.windows for label in w.labels])
        return self.make_dataloader(dataset, data_config, split)

    # ------------------------------------------------------------------ Hugging Face
    def hf_export(self, state):
        return ("MegatronBertForTokenClassification", self.classifier.hf_tensors(state, "classifier"),
                self.hf_label_config())

    # ------------------------------------------------------------------ inference
    def _predict_windows(self, dataset: TokenClassificationDataset, batch_size: int, forward=None
                         ) -> Tuple[List[int], List[List[int]], List[List[float]]]:
        """Window indices, and label ids and their probabilities per position of every window."""
        rows = self.infer(dataset, batch_size, forward)
        return list(rows), [labels for labels, _ in rows.values()], [probs for _, probs in rows.values()]

    def evaluate(self, file: str, output_file: Optional[str] = None, batch_size: int = 32,
                 max_seq_length: Optional[int] = None) -> Dict:
        """Entity-level scores (:func:`~biomegatron_nemo.metrics.ner.ner_scores`) on a CoNLL file;
        ``output_file``: ``word gold pred`` lines, a blank line between sentences (conlleval's input)."""
        file = check_input_file(file, "evaluate")
        check_positive_int(batch_size, "evaluate", "batch_size")
        sentences = self.read_sentences(file)
        self.check_known_tags(sentences)
        dataset = self.make_dataset(sentences, max_seq_length)
        indices, label_rows, _ = self._predict_windows(dataset, batch_size)
        pred = dataset.predictions_to_tags(label_rows, indices)
        gold = [s.tags for s in sentences]
        if output_file:
            write_conll_predictions(output_file, [s.words for s in sentences], gold, pred)
        return ner_scores(gold, pred)

    def predict(self, texts: Sequence[str], batch_size: int = 32, max_seq_length: Optional[int] = None,
                forward=None) -> List[List[Dict]]:
        """Entities in raw texts: per text a list of ``{"type", "start", "end", "text", "score"}``.

        ``start``/``end`` are character offsets (``text[start:end]`` is the surface string);
        ``score`` is the mean probability of the predicted tags over the entity's words. Words
        are the tokenizer's own units (WordPiece: split at whitespace and punctuation, like the
        BC5CDR tokenization); texts longer than the window are split into overlapping windows.
        Empty or whitespace-only texts give ``[]``. ``forward`` runs instead of the model's own
        (:meth:`~biomegatron_nemo.models.finetuning.FineTuningModel.infer`).
        """
        texts = check_list(texts, "predict", "texts", "strings")
        check_positive_int(batch_size, "predict", "batch_size")
        for ti, text in enumerate(texts):
            check_text(text, "predict", f"texts[{ti}]")
        spans_per_text: Dict[int, List[Tuple[int, int]]] = {}
        sentences = []
        for ti, text in enumerate(texts):
            spans = word_spans(self.tokenizer.encode(text)) if text.strip() else []
            if spans:
                spans_per_text[ti] = spans
                sentences.append(Sentence([text[s:e] for s, e in spans], ["O"] * len(spans)))
        results: List[List[Dict]] = [[] for _ in texts]
        if not sentences:
            return results
        dataset = self.make_dataset(sentences, max_seq_length)
        indices, label_rows, prob_rows = self._predict_windows(dataset, batch_size, forward)
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
