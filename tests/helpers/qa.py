"""Question-answering test data (built from the shipped SAMPLE snippets) and spawned TP runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from _data_paths import SAMPLES

#: sentences around the answer of the long context: ~130 sub-tokens, more than one 64-token window
FILLER = ("Adverse events were mostly mild and resolved without treatment. Patients were followed for "
          "two years after the end of therapy. The study enrolled adults at several centres and "
          "measured survival, response and quality of life. ")
LONG_QUESTION = "Which gene was sequenced in every patient?"


def sample_paragraphs() -> List[Dict]:
    doc = json.loads((SAMPLES / "qa" / "train.json").read_text())
    return [p for article in doc["data"] for p in article["paragraphs"]]


def long_context_paragraph() -> Dict:
    """A context whose answer lies only in its second window (at the very end of the text)."""
    context = FILLER * 3 + "The gene sequenced in every patient was FBN1"
    start = context.rindex("FBN1")
    return {"context": context, "qas": [{"id": "long_000", "question": LONG_QUESTION,
                                          "answers": [{"text": "FBN1", "answer_start": start}]}]}


def overfit_file(path: Path, version_2: bool = False) -> Path:
    """16 questions in SQuAD JSON: 15 sample questions and the long-context one; in v2 mode 4 of
    the sample questions are asked over a context that does not answer them (unanswerable)."""
    paragraphs, questions = [], 0
    pool = sample_paragraphs()
    for k, p in enumerate(pool):
        qas = []
        for qa in p["qas"]:
            if questions < 15:
                qas.append(qa)
                questions += 1
        if version_2 and k < 4:
            # the next paragraph's drug is not in this context
            other = pool[k + 2]["qas"][0]
            qas[-1] = {"id": f"impossible_{k}", "question": other["question"], "answers": [], "is_impossible": True}
        if qas:
            paragraphs.append({"context": p["context"], "qas": qas})
    paragraphs.append(long_context_paragraph())
    doc = {"version": "v2.0" if version_2 else "1.1", "data": [{"title": "overfit", "paragraphs": paragraphs}]}
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def spawned_span_logits(rank, world_size, config_file, items, out):
    """Build the QA model of ``config_file`` at TP=2 (its weights from init_from) and write the
    start/end logits of ``items`` (question, context pairs)."""
    import torch
    import torch.distributed as dist
    from omegaconf import OmegaConf

    from biomegatron_nemo.data.squad import QAExample
    from biomegatron_nemo.models.question_answering import QuestionAnsweringModel
    from biomegatron_nemo.parallel import initialize_megatron

    initialize_megatron(2, 1)
    model = QuestionAnsweringModel(OmegaConf.load(config_file))
    model.eval()
    ds = model.make_dataset([QAExample(str(i), q, c) for i, (q, c) in enumerate(items)])
    batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        output = model(**model.forward_inputs(batch))
        start, end = output.start_logits, output.end_logits
    if dist.get_rank() == 0:
        torch.save({"start": start, "end": end}, out)
