"""``QuestionAnsweringModel``: extractive span QA — SQuAD v1.1/v2.0, then BioASQ factoid.

It owns the QA task on top of :class:`~biomegatron_nemo.models.finetuning.FineTuningTaskModel`
(loaders, evaluation gathering):

* the span head (start/end logits per position; 2 layers as in the paper) and its loss: the mean
  of the start and end cross-entropies over the positions of each window ([CLS] for windows
  without the answer and unanswerable questions), padding excluded, normalised by whole-batch,
  data-parallel window counts;
* validation and test scores: SQuAD EM/F1 (v1.1, or v2.0 with HasAns/NoAns and the best
  no-answer threshold) or, with ``dataset: bioasq``, strict/lenient accuracy and MRR over
  questions after merging the n-best answers of all their snippets;
* the decoding of the rows the shared inference loop gives (start and end logits of every
  window) into ranked answers: :meth:`evaluate` (a SQuAD-format file → scores and ``predictions.json``,
  ``nbest_predictions.json``, ``null_odds.json`` for v2.0, the BioASQ submission for BioASQ),
  :meth:`answer` and :meth:`predict` (questions over raw contexts → ranked answers with
  character offsets and probabilities).

The two-stage recipe of the paper (SQuAD, then BioASQ) is configuration: the BioASQ model starts
from the SQuAD model's ``.nemo`` (``language_model.pretrained``) with ``init_heads: true``. Reading and
windowing live in :mod:`biomegatron_nemo.data.squad`, decoding in
:mod:`biomegatron_nemo.data.qa_decoding`, scores in :mod:`biomegatron_nemo.metrics.squad` and
:mod:`biomegatron_nemo.metrics.bioasq`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from biomegatron_nemo.common.arguments import check_input_file, check_list, check_positive_int, check_text
from biomegatron_nemo.common.config import option, section
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.data.qa_decoding import decode_predictions
from biomegatron_nemo.data.squad import (
    UNMATCHED_ANSWER_POLICIES,
    QADataConfig,
    QADataset,
    QAExample,
    bioasq_gold_from_examples,
    check_unmatched_answers,
    question_id,
    read_bioasq_golden,
    read_squad,
)
from biomegatron_nemo.encoder.heads import ClassificationHeadConfig, SpanQAHead
from biomegatron_nemo.metrics.bioasq import bioasq_scores, merge_nbest, write_submission
from biomegatron_nemo.metrics.squad import squad_scores
from biomegatron_nemo.models.config import BioMegatronModelConfig
from biomegatron_nemo.models.finetuning import FineTuningTaskModel
from biomegatron_nemo.models.outputs import SpanQAOutput
from biomegatron_nemo.parallel.state import data_parallel_normalizer

DATASETS = ("squad", "bioasq")
PADDING_LOGIT = -10000.0


@dataclass
class QuestionAnsweringModelConfig(BioMegatronModelConfig):
    """``model:`` of :class:`QuestionAnsweringModel`."""

    dataset: str = option("squad", "what validation and evaluate score: squad (EM/F1) or bioasq (SAcc/LAcc/MRR "
                                   "over questions, n-best merged across snippets)", choices=DATASETS)
    version_2_with_negative: bool = option(False, "SQuAD v2.0: unanswerable questions, answered by the [CLS] null score")
    null_score_diff_threshold: float = option(0.0, "v2.0: answer \"\" when null score - best span score exceeds "
                                                   "this (tune on dev: evaluate reports best_f1_thresh)")
    doc_stride: int = option(128, "sub-tokens between the starts of consecutive windows of a long context")
    max_query_length: int = option(64, "question sub-tokens kept")
    max_answer_length: int = option(30, "longest answer in sub-tokens")
    n_best_size: int = option(20, "start and end candidates per window, and answers kept per example")
    unmatched_answers: str = option("error", "a training answer not found in its context: error (naming file "
                                             "and question) or warn (skipped and counted)",
                                    choices=UNMATCHED_ANSWER_POLICIES)
    head: ClassificationHeadConfig = section(ClassificationHeadConfig, "the span head (2 outputs per position)")
    train_ds: Optional[QADataConfig] = section(QADataConfig, "training data (SQuAD-format JSON)")
    validation_ds: Optional[QADataConfig] = section(QADataConfig, "validation data (EM/F1 or SAcc/LAcc/MRR per epoch)")
    test_ds: Optional[QADataConfig] = section(QADataConfig, "test data")

    def check(self) -> None:
        super().check()
        for key in ("doc_stride", "max_query_length", "max_answer_length", "n_best_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, key)}", key=key)
        if self.version_2_with_negative and self.dataset == "bioasq":
            raise ConfigError("BioASQ factoid questions all have answers; use version_2_with_negative=false",
                              key="version_2_with_negative")


Question = Union[Mapping[str, str], Tuple[str, str]]


class QuestionAnsweringModel(FineTuningTaskModel):
    """Encoder + :class:`SpanQAHead`; config :class:`QuestionAnsweringModelConfig`."""

    config_class = QuestionAnsweringModelConfig

    # ------------------------------------------------------------------ modules and loss
    def build_heads(self) -> None:
        if self.encoder.post_process:
            self.span_head = SpanQAHead(self.encoder.config.hidden_size, self.config.head)

    def head_outputs(self, hidden, attention_mask) -> SpanQAOutput:
        """Start and end logits ``[b, s]`` (fp32), padding positions at -10000."""
        start, end = self.span_head(hidden)
        padding = attention_mask == 0
        return SpanQAOutput(start_logits=start.float().masked_fill(padding, PADDING_LOGIT),
                            end_logits=end.float().masked_fill(padding, PADDING_LOGIT))

    def loss_normalizers(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        return {"qa": data_parallel_normalizer(float(batch["input_ids"].shape[0]))}

    def loss(self, output: SpanQAOutput, batch, normalizers=None) -> Dict[str, torch.Tensor]:
        normalizers = normalizers or self.loss_normalizers(batch)
        summed = (F.cross_entropy(output.start_logits, batch["start_positions"], reduction="sum")
                  + F.cross_entropy(output.end_logits, batch["end_positions"], reduction="sum"))
        return {"qa": summed / (2 * normalizers["qa"])}

    def output_rows(self, batch, output: SpanQAOutput):
        """Per window: the start and end logits of its real positions."""
        for fi, n, s, e in zip(batch["feature_index"].tolist(), batch["attention_mask"].sum(-1).tolist(),
                               output.start_logits.cpu(), output.end_logits.cpu()):
            yield fi, (s[:n].tolist(), e[:n].tolist())

    # ------------------------------------------------------------------ data
    def make_dataset(self, examples: Sequence[QAExample], max_seq_length: Optional[int] = None,
                     training: bool = False, source: str = "<examples>", golden_file: Optional[str] = None) -> QADataset:
        """Windowed features of ``examples``; ``training``: unmatched answers per ``unmatched_answers``."""
        config = self.config
        max_seq_length = max_seq_length or (config.train_ds or QADataConfig()).max_seq_length
        limit = self.encoder_config.max_position_embeddings
        if max_seq_length > limit:
            raise ValueError(f"max_seq_length={max_seq_length} exceeds the encoder's max_position_embeddings={limit}")
        dataset = QADataset(examples, self.tokenizer, max_seq_length, config.doc_stride, config.max_query_length,
                            training=training, golden_file=golden_file)
        if training:
            check_unmatched_answers(dataset.stats, source, config.unmatched_answers)
        return dataset

    def build_dataloader(self, data_config: QADataConfig, split: str):
        if not data_config.file:
            if split == "train":
                raise ConfigError("is required for training", key="train_ds.file", where=type(self).__name__)
            return None
        training = split == "train"
        examples = read_squad(data_config.file, require_answers=training)
        dataset = self.make_dataset(examples, data_config.max_seq_length, training, source=data_config.file,
                                    golden_file=data_config.golden_file)
        return self.make_dataloader(dataset, data_config, split)

    # ------------------------------------------------------------------ validation / test scores
    def on_validation_epoch_end(self) -> None:
        self._log_scores("val", self._validation_dl)

    def on_test_epoch_end(self) -> None:
        self._log_scores("test", self._test_dl)

    def _log_scores(self, split: str, loader) -> None:
        rows = self.take_eval_rows(split)
        if rows is None or loader is None:
            return
        dataset: QADataset = self.examples_of(loader)
        decoded = self.decode(dataset, *_starts_and_ends(rows))
        scores = self.scores(dataset.examples, *decoded, golden_file=dataset.golden_file)
        self.last_scores[split] = scores
        # identical on every rank after the gather, so averaging over ranks (sync_dist) keeps them
        logged = ("exact_match", "f1", "exact", "best_f1", "best_f1_thresh", "strict_accuracy", "lenient_accuracy", "mrr")
        for key in logged:
            if key in scores:
                self.log(f"{split}_{key}", float(scores[key]), prog_bar=key in ("f1", "mrr"), sync_dist=True)

    def decode(self, dataset: QADataset, start_logits, end_logits):
        """``(predictions, nbest, null_odds)`` of ``dataset`` (see :func:`decode_predictions`)."""
        config = self.config
        return decode_predictions(dataset.examples, dataset.features, start_logits, end_logits,
                                  n_best=config.n_best_size, max_answer_length=config.max_answer_length,
                                  version_2=config.version_2_with_negative,
                                  null_score_diff_threshold=config.null_score_diff_threshold)

    def scores(self, examples: Sequence[QAExample], predictions: Dict[str, str], nbest: Dict[str, List[Dict]],
               null_odds: Dict[str, float], golden_file: Optional[str] = None) -> Dict:
        """SQuAD EM/F1 (official v1.1 or v2.0 rules), or BioASQ SAcc/LAcc/MRR with ``dataset: bioasq``
        (golden answers from ``golden_file``, else the examples' answers); ``{}`` without any gold."""
        config = self.config
        if config.dataset == "bioasq":
            gold = read_bioasq_golden(golden_file) if golden_file else bioasq_gold_from_examples(examples)
            if not gold:
                return {}
            return bioasq_scores({qid: g.synonyms for qid, g in gold.items()}, ranked_answers(examples, nbest))
        questions = [{"id": ex.id, "answers": ex.answers, "is_impossible": ex.is_impossible} for ex in examples]
        if not config.version_2_with_negative and not any(q["answers"] for q in questions):
            return {}
        if config.version_2_with_negative:
            return squad_scores(questions, predictions, na_probs=null_odds, version_2=True)
        return squad_scores(questions, predictions, version_2=False)

    # ------------------------------------------------------------------ Hugging Face
    def hf_export(self, state):
        return "MegatronBertForQuestionAnswering", self.span_head.hf_tensors(state, "span_head"), {}

    # ------------------------------------------------------------------ inference
    def feature_logits(self, dataset: QADataset, batch_size: int = 32) -> Tuple[Dict[int, list], Dict[int, list]]:
        """Start and end logits of every window (by feature index)."""
        return _starts_and_ends(self.infer(dataset, batch_size))

    def evaluate(self, file: str, output_dir: Optional[str] = None, golden_file: Optional[str] = None,
                 batch_size: int = 32, max_seq_length: Optional[int] = None) -> Dict:
        """Scores (:meth:`scores`) on a SQuAD-format file; with ``output_dir``: ``predictions.json``
        (id → text, the official scripts' input), ``nbest_predictions.json``, ``null_odds.json``
        (v2.0: the official script's ``--na-prob-file``) and, for BioASQ, ``bioasq_submission.json``
        (official Task B format, five answers per question). The feature counts are in ``data``."""
        file = check_input_file(file, "evaluate")
        if golden_file is not None:
            golden_file = check_input_file(golden_file, "evaluate", "golden_file")
        check_positive_int(batch_size, "evaluate", "batch_size")
        dataset = self.make_dataset(read_squad(file), max_seq_length, source=file)
        predictions, nbest, null_odds = self.decode(dataset, *self.feature_logits(dataset, batch_size))
        scores = self.scores(dataset.examples, predictions, nbest, null_odds, golden_file)
        scores["data"] = {"examples": dataset.stats.examples, "features": dataset.stats.features,
                          "answers_not_in_context": len(dataset.stats.unmatched)}
        if output_dir:
            out = Path(output_dir)
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "predictions.json", predictions)
            _write_json(out / "nbest_predictions.json", nbest)
            if self.config.version_2_with_negative:
                _write_json(out / "null_odds.json", null_odds)
            if self.config.dataset == "bioasq":
                write_submission(out / "bioasq_submission.json", ranked_answers(dataset.examples, nbest))
        return scores

    def predict(self, questions: Sequence[Question], top_k: int = 5, batch_size: int = 32) -> List[List[Dict]]:
        """Per ``{"question", "context"}`` (or ``(question, context)`` pair): up to ``top_k`` answers,
        best first, as ``{"text", "start", "end", "probability"}`` — ``context[start:end] == text``;
        in v2.0 mode ``{"text": ""}`` (start/end None) stands for "no answer"."""
        questions = check_list(questions, "predict", "questions",
                               "{'question': ..., 'context': ...} mappings or (question, context) pairs (or use answer())")
        check_positive_int(top_k, "predict", "top_k")
        check_positive_int(batch_size, "predict", "batch_size")
        examples = [QAExample(f"input:{i}", *_question_and_context(item, i)) for i, item in enumerate(questions)]
        dataset = self.make_dataset(examples)
        _, nbest, _ = self.decode(dataset, *self.feature_logits(dataset, batch_size))
        return [[{"text": a["text"], "start": a["start"], "end": a["end"], "probability": round(a["probability"], 6)}
                 for a in nbest.get(ex.id, [])[:top_k]] for ex in examples]

    def answer(self, question: str, context: str, top_k: int = 5) -> List[Dict]:
        """The ranked answers to one question over one context (see :meth:`predict`)."""
        check_text(question, "answer", "question")
        check_text(context, "answer", "context")
        return self.predict([{"question": question, "context": context}], top_k=top_k)[0]


def ranked_answers(examples: Sequence[QAExample], nbest: Mapping[str, List[Dict]]) -> Dict[str, List[str]]:
    """BioASQ: question id → its five best answers merged over its snippets, for every question of
    ``examples`` (an empty list when none has a span, so it scores 0 rather than being skipped)."""
    ranked = {question_id(ex.id): [] for ex in examples}
    ranked.update(merge_nbest(nbest, question_of=question_id))
    return ranked


def _starts_and_ends(rows: Mapping[int, Tuple[list, list]]) -> Tuple[Dict[int, list], Dict[int, list]]:
    return {fi: start for fi, (start, _) in rows.items()}, {fi: end for fi, (_, end) in rows.items()}


def _question_and_context(item: Question, index: int) -> Tuple[str, str]:
    where = f"questions[{index}]"
    if isinstance(item, Mapping):
        missing = [k for k in ("question", "context") if k not in item]
        if missing:
            raise ValueError(f"predict: {where}: missing key(s) {missing}; expected {{'question': ..., 'context': ...}}")
        question, context = item["question"], item["context"]
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        question, context = item
    else:
        raise TypeError(f"predict: {where} is {type(item).__name__}; expected {{'question': ..., 'context': ...}} "
                        "or a (question, context) pair")
    return check_text(question, "predict", f"{where}.question"), check_text(context, "predict", f"{where}.context")


def _write_json(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
