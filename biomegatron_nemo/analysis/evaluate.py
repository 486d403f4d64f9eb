"""Standalone evaluation: ``python -m biomegatron_nemo.analysis.evaluate {ner,re,squad,bioasq}``.

Reads a gold file and a prediction file, prints a table (or JSON with ``--json``). Prediction
file formats:

``ner``     CoNLL, one token per line, the predicted tag in the **last** column, blank lines
            between sentences, same tokens in the same order as the gold file. The 3-column
            ``word gold pred`` file written by ``write_conll_predictions`` (conlleval input) works.
``re``      TSV, one prediction per line: ``id<TAB>label`` (in gold order, or any order when the
            gold ids are unique) or just ``label`` (one per gold row, in order). An optional ``index``/``id`` header is skipped.
``squad``   JSON ``{question id: answer text}`` (the official format; ``""`` = no answer);
            ``--na-prob FILE`` adds v2.0 no-answer probabilities ``{id: p}``. Scored as the
            official ``evaluate-v1.1.py`` or ``evaluate-v2.0.py`` would (same JSON keys):
            ``--version``, else the gold file's ``version`` field, else v2.0 when any question
            has an ``is_impossible`` key.
``bioasq``  JSON n-best ``{snippet id: [{"text": ..., "probability": ...}, ...]}`` (BioBERT's
            ``nbest_predictions.json``, also written by the QA model); gold is an official golden
            file or a SQuAD-format BioASQ file. ``--submission OUT`` writes the BioASQ JSON.

Each metric module is imported only by its sub-command so the command starts quickly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Tuple

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.common.files import iter_lines, load_json


def _eval_ner(args) -> tuple:
    from biomegatron_nemo.data.conll import read_conll
    from biomegatron_nemo.metrics.ner import format_ner_table, ner_scores

    gold = read_conll(args.gold, scheme=args.scheme)
    pred = read_conll(args.pred, scheme=args.scheme)
    if len(gold) != len(pred):
        raise DataFormatError(args.pred, None, f"{len(pred)} sentences, gold file {args.gold} has {len(gold)}")
    for g, p in zip(gold, pred):
        if g.words != p.words:
            k = next((i for i, (a, b) in enumerate(zip(g.words, p.words)) if a != b), min(len(g), len(p)))
            raise DataFormatError(args.pred, p.line + k, f"token does not match gold {args.gold}:"
                                  f"{g.line + k} (sentence lengths {len(g)}/{len(p)})", field="token")
    scores = ner_scores([g.tags for g in gold], [p.tags for p in pred])
    return scores, format_ner_table(scores)


def _read_re_predictions(path: Path, n_gold: int, ids: List[str]) -> Tuple[List[str], List[int]]:
    rows = [(lineno, line.split("\t")) for lineno, line in iter_lines(path) if line.strip()]
    if rows and rows[0][1][0].strip().lower() in ("index", "id"):
        rows = rows[1:]
    if rows and all(len(r) == 3 for _, r in rows):  # id<TAB>label<TAB>probability (the models' evaluate)
        for lineno, r in rows:
            try:
                float(r[2])
            except ValueError:
                raise DataFormatError(path, lineno, f"third column {r[2]!r} is not a probability",
                                      field="probability") from None
        rows = [(lineno, r[:2]) for lineno, r in rows]
    if rows and all(len(r) == 2 for _, r in rows):
        if [r[0] for _, r in rows] == ids:  # same rows in gold order (ids need not be unique)
            return [r[1].strip() for _, r in rows], [ln for ln, _ in rows]
        if len(set(ids)) != len(ids):
            raise DataFormatError(path, None, "gold ids are not unique (ChemProt repeats a few), so "
                                  "predictions must list them in gold order")
        by_id = {}
        for lineno, (rid, label) in rows:
            if rid in by_id:
                raise DataFormatError(path, lineno, f"duplicate id {rid!r}", field="id")
            by_id[rid] = (lineno, label.strip())
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataFormatError(path, None, f"{len(missing)} gold ids have no prediction, e.g. {missing[:3]}")
        return [by_id[i][1] for i in ids], [by_id[i][0] for i in ids]
    bad = next(((ln, r) for ln, r in rows if len(r) != 1), None)
    if bad:
        raise DataFormatError(path, bad[0], f"expected 'id<TAB>label[<TAB>probability]' or 'label' on every line, "
                              f"found {len(bad[1])} columns", field="columns")
    if len(rows) != n_gold:
        raise DataFormatError(path, None, f"{len(rows)} predictions for {n_gold} gold rows")
    return [r[0].strip() for _, r in rows], [ln for ln, _ in rows]


def _eval_re(args) -> tuple:
    from biomegatron_nemo.data.chemprot import read_classification_tsv
    from biomegatron_nemo.data.chemprot import CHEMPROT_LABELS
    from biomegatron_nemo.metrics.classification import classification_scores, format_classification_table

    labels = args.labels.split(",") if args.labels else list(CHEMPROT_LABELS)
    gold = read_classification_tsv(args.gold, labels=labels)
    pred, lines = _read_re_predictions(Path(args.pred), len(gold), [g.guid for g in gold])
    for label, ln in zip(pred, lines):
        if label not in labels:
            raise DataFormatError(args.pred, ln, f"label {label!r} is not one of {labels}", field="label")
    scores = classification_scores([g.label for g in gold], pred, negative_label=args.negative, labels=labels)
    return scores, format_classification_table(scores)


def squad_version(doc) -> Tuple[str, str]:
    """Which official script a SQuAD gold file is meant for: ``("1.1" | "2.0", reason)``.

    The file's ``version`` field when it names one of them (SQuAD ships ``"1.1"`` and
    ``"v2.0"``), else v2.0 when any question has an ``is_impossible`` key, else v1.1.
    """
    field = str(doc.get("version", "")) if isinstance(doc, dict) else ""
    if field.lstrip("vV") in ("1.1", "2.0"):
        return field.lstrip("vV"), f"the gold file's version field {field!r}"
    data = doc.get("data", []) if isinstance(doc, dict) else []
    if any("is_impossible" in qa for art in data if isinstance(art, dict)
           for p in art.get("paragraphs", []) if isinstance(p, dict) for qa in p.get("qas", [])):
        return "2.0", "questions with an is_impossible key"
    return "1.1", "no version field and no is_impossible key"


def _eval_squad(args) -> tuple:
    from dataclasses import asdict

    from biomegatron_nemo.data.squad import read_squad
    from biomegatron_nemo.metrics.squad import squad_scores

    gold = [asdict(e) for e in read_squad(args.gold)]
    version, why = (args.version, "--version") if args.version else squad_version(load_json(args.gold))
    preds = load_json(args.pred)
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise DataFormatError(args.pred, None, "expected a JSON object {question id: answer text}")
    na = load_json(args.na_prob) if args.na_prob else None
    if na is not None and (not isinstance(na, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in na.values())):
        raise DataFormatError(args.na_prob, None, "expected a JSON object {question id: no-answer probability}")
    if na is not None and version != "2.0":
        raise DataFormatError(args.na_prob, None, f"no-answer probabilities are a SQuAD v2.0 option, but "
                              f"{args.gold} is scored as v1.1 ({why}); pass --version 2.0")
    try:
        scores = squad_scores(gold, preds, na_probs=na, na_prob_thresh=args.na_prob_thresh,
                              version_2=version == "2.0")
    except ValueError as e:
        raise DataFormatError(args.gold, None, str(e)) from None
    table = "\n".join([f"SQuAD v{version} ({why})"] + [
        f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}" for k, v in scores.items()])
    return scores, table


def _eval_bioasq(args) -> tuple:
    from biomegatron_nemo.data.squad import question_id, read_bioasq_golden
    from biomegatron_nemo.metrics.bioasq import bioasq_scores, merge_nbest, write_submission

    gold = read_bioasq_golden(args.gold)
    nbest = load_json(args.pred)
    if not isinstance(nbest, dict) or not all(isinstance(v, list) for v in nbest.values()):
        raise DataFormatError(args.pred, None, "expected n-best JSON {snippet id: [{text, probability}]}")
    try:
        ranked = merge_nbest(nbest, question_of=question_id)
    except ValueError as e:
        raise DataFormatError(args.pred, None, str(e)) from None
    ranked = {q: ranked.get(q, []) for q in gold}  # every golden question, answered or not
    if args.submission:
        write_submission(args.submission, ranked)
    scores = bioasq_scores({qid: g.synonyms for qid, g in gold.items()}, ranked)  # = the Java scorer on it
    table = (f"questions: {scores['questions']} (with predictions: {scores['answered']})\n"
             f"strict accuracy (SAcc): {scores['strict_accuracy']:.4f}\n"
             f"lenient accuracy (LAcc): {scores['lenient_accuracy']:.4f}\n"
             f"mean reciprocal rank (MRR): {scores['mrr']:.4f}")
    if args.submission:
        table += f"\nsubmission written to {args.submission}"
    return scores, table


def build_parser(prog=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "python -m biomegatron_nemo.analysis.evaluate",
                                description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1].split("\n\nEach")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True)
    specs = {
        "ner": ("entity-level P/R/F1 (conlleval) per type, token accuracy", _eval_ner),
        "re": ("micro P/R/F1 over positive classes, per-class table, confusion matrix", _eval_re),
        "squad": ("SQuAD v1.1/v2.0 exact match and F1", _eval_squad),
        "bioasq": ("BioASQ factoid strict/lenient accuracy and MRR", _eval_bioasq),
    }
    for name, (helptext, fn) in specs.items():
        s = sub.add_parser(name, help=helptext, description=helptext)
        s.add_argument("--gold", required=True, help="gold file")
        s.add_argument("--pred", required=True, help="prediction file (formats: see --help of the command)")
        s.add_argument("--json", action="store_true", help="print scores as JSON")
        s.set_defaults(fn=fn)
        if name == "ner":
            s.add_argument("--scheme", default="IOB2", choices=["IOB1", "IOB2", "IOBES"])
        if name == "re":
            s.add_argument("--labels", help="comma-separated label set (default: ChemProt's)")
            s.add_argument("--negative", default="false", help="negative label excluded from micro-F1")
        if name == "squad":
            s.add_argument("--version", choices=["1.1", "2.0"],
                           help="official script to reproduce (default: the gold file's version field, "
                                "else 2.0 when a question has an is_impossible key)")
            s.add_argument("--version-2", dest="version", action="store_const", const="2.0",
                           help=argparse.SUPPRESS)  # older spelling of --version 2.0
            s.add_argument("--na-prob", help="JSON {id: no-answer probability} (v2.0)")
            s.add_argument("--na-prob-thresh", type=float, default=1.0,
                           help="answer \"\" when the no-answer probability exceeds this (v2.0; default 1.0)")
        if name == "bioasq":
            s.add_argument("--submission", help="write the official BioASQ submission JSON here")
    return p


def main(argv=None, prog=None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        scores, table = args.fn(args)
    except (DataFormatError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(scores, indent=1, sort_keys=True))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
