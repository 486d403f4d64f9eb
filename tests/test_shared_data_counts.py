"""Every reader parses every file of the real benchmark data with the counts its README states.

Optional: skipped when the shared data folder (../shared/data beside the project, or
$BIOMEGATRON_SHARED_DATA) is absent. Mention counts use the metric's own (conlleval) chunking.
"""

from collections import Counter

import pytest

from biomegatron_nemo.analysis.label_bias import label_bias
from biomegatron_nemo.data.chemprot import read_chemprot
from biomegatron_nemo.data.conll import read_conll
from biomegatron_nemo.data.squad import question_id, read_bioasq_golden, read_squad
from biomegatron_nemo.metrics.ner import ner_scores
from biomegatron_nemo.metrics.squad import squad_scores

from _data_paths import SHARED_DATA

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "README.md").exists(),
                                reason=f"real benchmark data not found at {SHARED_DATA}")


def _mentions(path):
    tags = [s.tags for s in read_conll(path)]
    per_type = ner_scores(tags, tags)["per_type"]
    return len(tags), {t: v["gold"] for t, v in per_type.items()}


@pytest.mark.parametrize("folder, split, sentences, mentions", [
    ("BC5CDR", "train", 4560, {"Chemical": 5203, "Disease": 4182}),
    ("BC5CDR", "devel", 4581, {"Chemical": 5347, "Disease": 4246}),
    ("BC5CDR-chem", "train", 4560, {"Chemical": 5203}),
    ("BC5CDR-disease", "train", 4560, {"Disease": 4182}),
    ("NCBI-disease", "train", 5424, {"Disease": 5134}),
    ("NCBI-disease", "devel", 923, {"Disease": 787}),
])
def test_ner_files(folder, split, sentences, mentions):
    assert _mentions(SHARED_DATA / "ner" / folder / f"{split}.tsv") == (sentences, mentions)


def test_chemprot_dev_and_train_positives():
    dev = Counter(r.label for r in read_chemprot(SHARED_DATA / "chemprot" / "dev.tsv"))
    assert dev == {"CPR:3": 550, "CPR:4": 1094, "CPR:5": 116, "CPR:6": 199, "CPR:9": 457, "false": 9404}
    assert round(label_bias(dev)["bias"], 3) == 0.257
    train = read_chemprot(SHARED_DATA / "chemprot" / "train_positives.tsv")
    assert len(train) == 4154 and all(r.label != "false" for r in train)


def test_bioasq_train_and_6b_batches_with_golden_answers():
    train = read_squad(SHARED_DATA / "bioasq" / "BioASQ-train-factoid-7b.json", require_answers=True)
    assert len(train) == 4231 and len({question_id(e.id) for e in train}) == 530
    for batch in range(1, 6):
        test = read_squad(SHARED_DATA / "bioasq" / f"BioASQ-test-factoid-6b-{batch}.json")
        gold = read_bioasq_golden(SHARED_DATA / "bioasq" / f"6B{batch}_golden.json")
        assert {question_id(e.id) for e in test} == set(gold)
        assert all(g.synonyms for g in gold.values())


def test_squad_v11_dev():
    dev = read_squad(SHARED_DATA / "squad" / "dev-v1.1.json", require_answers=True)
    assert len(dev) == 10570 and not any(e.is_impossible for e in dev)
    gold = [{"id": e.id, "answers": e.answers} for e in dev]
    s = squad_scores(gold, {e.id: e.answers[-1]["text"] for e in dev})
    # evaluate-v1.1.py's F1 of an answer that normalises to nothing is 0 even against itself: one
    # question's last gold answer is "." (57340d124776f419006617bf), so gold scored as prediction
    # gives EM 100 but F1 100 * 10569 / 10570 (a v2.0-style F1 would give 100)
    assert s["exact_match"] == 100.0 and s["f1"] == pytest.approx(100 * 10569 / 10570) and s["total"] == 10570
