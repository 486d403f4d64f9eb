"""BioASQ factoid measures: strict accuracy, lenient accuracy, mean reciprocal rank.

A question's snippets are separate model inputs (ids ``<question>_<nnn>``); their n-best answers
are merged into one ranked list per question as BioBERT's ``transform_nbset2bioasqform.py`` does
before the official evaluation: empty answers and answers over 100 characters are dropped,
answers equal ignoring case are one answer (the spelling of its most probable occurrence) whose
probability is the sum over its occurrences (``combine="max"`` keeps the highest instead), and
the five most probable are kept (the five-answer limit of a factoid submission).

Scoring follows the official Java evaluator (github.com/BioASQ/Evaluation-Measures,
``EvaluatorTask1b -phaseB -e 5`` or later, i.e. BioASQ 5 onwards; classes
``QuestionAnswerEvaluator``, ``Task1bData``, ``ExactAnswer``):

* answers and golden synonyms are lower-cased and then compared exactly; whitespace is not
  trimmed (this scorer used to trim it, which the Java code does not);
* an answer is correct when it equals any synonym of any of the golden answer's synonym lists;
* a submitted answer may be a list of synonyms; only its first element counts (an empty list
  still takes its rank and matches nothing);
* every submitted answer is scored, not only the first five (the Java code does not cut the
  list; the limit is a submission rule, which :func:`merge_nbest` applies);
* SAcc: the first answer is correct; LAcc: any is; MRR: mean of 1/rank of the first correct one
  (0 when none is);
* a golden question missing from the submission is left out of the averages, while one listed
  with no answers scores 0 (the Java code skips questions it cannot find). ``evaluate bioasq``
  lists every golden question, as the submission it writes does.

Own code because the official scorer is a Java program, not a library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

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


def _first_synonym(answer) -> Optional[str]:
    if isinstance(answer, str):
        return answer
    return answer[0] if answer else None  # since BioASQ 5 only the first synonym is read


def bioasq_scores(gold: Mapping[str, Sequence[str]],
                  ranked: Mapping[str, Sequence[Union[str, Sequence[str]]]]) -> Dict:
    """SAcc, LAcc, MRR over the golden questions that ``ranked`` lists (see the module docstring).

    ``gold``: question id → every synonym of its golden ``exact_answer`` (all synonym lists,
    flattened); ``ranked``: question id → answers, best first, each a string or a list of
    synonyms (as in a submission's ``exact_answer``). ``questions`` counts the golden questions,
    ``evaluated`` those in the averages, ``answered`` those with at least one answer.
    """
    if not gold:
        raise ValueError("no golden questions")
    strict = lenient = rr = 0.0
    per_question = {}
    for qid, synonyms in gold.items():
        if isinstance(synonyms, str):
            raise TypeError(f"gold[{qid!r}] must be a list of synonyms, not a string")
        if qid not in ranked:
            continue  # the official evaluator skips questions missing from the submission
        if isinstance(ranked[qid], str):
            raise TypeError(f"ranked[{qid!r}] must be a list of answers, not a string")
        syn = {s.lower() for s in synonyms}
        answers = [_first_synonym(a) for a in ranked[qid]]
        rank = next((i + 1 for i, a in enumerate(answers) if a is not None and a.lower() in syn), None)
        strict += rank == 1
        lenient += rank is not None
        rr += 1.0 / rank if rank else 0.0
        per_question[qid] = rank
    n = len(per_question)
    return {"strict_accuracy": strict / n if n else 0.0, "lenient_accuracy": lenient / n if n else 0.0,
            "mrr": rr / n if n else 0.0, "questions": len(gold), "evaluated": n,
            "answered": sum(1 for q in gold if ranked.get(q)), "rank_of_first_correct": per_question}


def write_submission(path: Union[str, Path], ranked: Mapping[str, Sequence[str]]) -> None:
    """Official BioASQ Task B submission JSON for factoid questions.

    Each answer is a list of synonyms, so ``exact_answer`` is ``[[answer1], [answer2], ...]``;
    ``ideal_answer`` is required by the format and left empty (this library extracts spans).
    """
    questions = [{"id": qid, "type": "factoid", "exact_answer": [[a] for a in answers],
                  "ideal_answer": ""} for qid, answers in ranked.items()]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"questions": questions}, f, indent=1, ensure_ascii=False)
