"""BioASQ factoid measures: strict accuracy, lenient accuracy, mean reciprocal rank.

A question's snippets are separate model inputs (ids ``<question>_<nnn>``); their n-best answers
are merged into one ranked list per question as BioBERT's ``transform_nbset2bioasqform.py`` does
before the official evaluation: empty answers and answers over 100 characters are dropped,
answers equal ignoring case are one answer (the spelling of its most probable occurrence) whose
probability is the sum over its occurrences (``combine="max"`` keeps the highest instead), and
the five most probable are kept. An answer is correct when it equals any synonym of the golden
``exact_answer`` ignoring case and surrounding whitespace.
SAcc: the first answer is correct; LAcc: any of the five is; MRR: mean of 1/rank of the first
correct answer (0 when none of the five is). Questions without any prediction score 0.
Own code because the official scorer is a Java program, not a library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, Union

MAX_ANSWERS = 5


def _key(text: str) -> str:
    return text.strip().lower()


def merge_nbest(nbest: Mapping[str, Sequence[Mapping]], *, question_of: Callable[[str], str],
                max_answers: int = MAX_ANSWERS, combine: str = "sum", max_answer_chars: int = 100
                ) -> Dict[str, List[str]]:
    """Snippet id → n-best ``[{"text", "probability"}]``  ⇒  question id → ranked answers.

    ``question_of`` maps a snippet id to its question id (the data set's convention, e.g.
    :func:`biomegatron_nemo.data.squad.question_id`).
    """
    if combine not in ("sum", "max"):
        raise ValueError(f"combine must be 'sum' or 'max', got {combine!r}")
    pooled: Dict[str, List[tuple]] = {}
    for snippet_id, entries in nbest.items():
        for k, e in enumerate(entries):
            if "text" not in e or "probability" not in e:
                raise ValueError(f"n-best entry {snippet_id}[{k}] needs 'text' and 'probability'")
            text = e["text"].strip()
            if text and len(text) <= max_answer_chars:
                pooled.setdefault(question_of(snippet_id), []).append((float(e["probability"]), text))
    ranked = {}
    for qid, cands in pooled.items():
        score: Dict[str, float] = {}
        spelling: Dict[str, str] = {}
        for prob, text in sorted(cands, key=lambda c: -c[0]):  # stable: ties keep input order
            key = _key(text)
            if key not in score:
                spelling[key], score[key] = text, prob
            elif combine == "sum":
                score[key] += prob
        order = sorted(score, key=lambda k: -score[k])  # stable: equal scores keep first-seen order
        ranked[qid] = [spelling[k] for k in order[:max_answers]]
    return ranked


def bioasq_scores(gold: Mapping[str, Sequence[str]], ranked: Mapping[str, Sequence[str]]) -> Dict:
    """SAcc, LAcc, MRR over the golden questions.

    ``gold``: question id → every synonym of its golden ``exact_answer``; ``ranked``: question
    id → answers, best first.
    """
    if not gold:
        raise ValueError("no golden questions")
    strict = lenient = rr = 0.0
    per_question = {}
    for qid, synonyms in gold.items():
        if isinstance(synonyms, str):
            raise TypeError(f"gold[{qid!r}] must be a list of synonyms, not a string")
        syn = {_key(s) for s in synonyms}
        answers = list(ranked.get(qid, []))[:MAX_ANSWERS]
        rank = next((i + 1 for i, a in enumerate(answers) if _key(a) in syn), None)
        strict += rank == 1
        lenient += rank is not None
        rr += 1.0 / rank if rank else 0.0
        per_question[qid] = rank
    n = len(gold)
    return {"strict_accuracy": strict / n, "lenient_accuracy": lenient / n, "mrr": rr / n,
            "questions": n, "answered": sum(1 for q in gold if ranked.get(q)),
            "rank_of_first_correct": per_question}


def write_submission(path: Union[str, Path], ranked: Mapping[str, Sequence[str]]) -> None:
    """Official BioASQ Task B submission JSON for factoid questions.

    Each answer is a list of synonyms, so ``exact_answer`` is ``[[answer1], [answer2], ...]``;
    ``ideal_answer`` is required by the format and left empty (this library extracts spans).
    """
    questions = [{"id": qid, "type": "factoid", "exact_answer": [[a] for a in answers],
                  "ideal_answer": ""} for qid, answers in ranked.items()]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"questions": questions}, f, indent=1, ensure_ascii=False)
