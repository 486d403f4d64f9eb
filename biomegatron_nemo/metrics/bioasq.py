"""BioASQ factoid measures: strict accuracy, lenient accuracy, mean reciprocal rank.

A question's snippets are separate model inputs (ids ``<question>_<nnn>``); their n-best answers
are merged into one ranked list per question by probability, de-duplicated case-insensitively
(keeping the most probable spelling), and cut to five, as BioBERT's
``transform_nbset2bioasqform.py`` does before the official evaluation. An answer is correct when
it equals any synonym of the golden ``exact_answer`` ignoring case and surrounding whitespace.
SAcc: the first answer is correct; LAcc: any of the five is; MRR: mean of 1/rank of the first
correct answer (0 when none of the five is). Questions without any prediction score 0.
Own code because the official scorer is a Java program, not a library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Union

from biomegatron_nemo.data.squad import BioASQGold, question_id

MAX_ANSWERS = 5


def _key(text: str) -> str:
    return text.strip().lower()


def merge_nbest(nbest: Mapping[str, Sequence[Mapping]], max_answers: int = MAX_ANSWERS) -> Dict[str, List[str]]:
    """Snippet id → n-best ``[{"text", "probability"}]``  ⇒  question id → ranked answers."""
    pooled: Dict[str, List[tuple]] = {}
    for snippet_id, entries in nbest.items():
        for k, e in enumerate(entries):
            if "text" not in e or "probability" not in e:
                raise ValueError(f"n-best entry {snippet_id}[{k}] needs 'text' and 'probability'")
            if e["text"].strip():
                pooled.setdefault(question_id(snippet_id), []).append((float(e["probability"]), e["text"].strip()))
    ranked = {}
    for qid, cands in pooled.items():
        seen, answers = set(), []
        for _, text in sorted(cands, key=lambda c: -c[0]):  # stable: ties keep input order
            if _key(text) not in seen:
                seen.add(_key(text))
                answers.append(text)
            if len(answers) == max_answers:
                break
        ranked[qid] = answers
    return ranked


def bioasq_scores(gold: Mapping[str, BioASQGold], ranked: Mapping[str, Sequence[str]]) -> Dict:
    """SAcc, LAcc, MRR over the golden questions; ``ranked``: question id → answers, best first."""
    if not gold:
        raise ValueError("no golden questions")
    strict = lenient = rr = 0.0
    per_question = {}
    for qid, g in gold.items():
        syn = {_key(s) for s in g.synonyms}
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
