"""BioASQ factoid SAcc/LAcc/MRR: merging snippets, synonyms, ranks 2 and 6, submission JSON."""

import json

import pytest

from biomegatron_nemo.data.squad import question_id
from biomegatron_nemo.metrics.bioasq import bioasq_scores, merge_nbest, write_submission

GOLD = {"5a1b": ["Tamoxifen", "TAM", "Nolvadex"],  # Which drug is a SERM?
        "5c2d": ["FBN1"]}  # Which gene is mutated in Marfan syndrome?

NBEST = {
    # question 5a1b: "ESTROGEN" duplicates "estrogen" (dropped), the synonym "tam" ranks 2nd
    "5a1b_001": [{"text": "estrogen", "probability": 0.7}, {"text": "Breast cancer", "probability": 0.2}],
    "5a1b_002": [{"text": "tam", "probability": 0.6}, {"text": "ESTROGEN", "probability": 0.65}],
    # question 5c2d: the right answer is 6th after merging → outside the five answers
    "5c2d_001": [{"text": "ELN", "probability": 0.9}, {"text": "FBN2", "probability": 0.8},
                 {"text": "TGFBR1", "probability": 0.6}],
    "5c2d_002": [{"text": "fbn2", "probability": 0.85}, {"text": "TGFBR2", "probability": 0.5},
                 {"text": "COL1A1", "probability": 0.4}, {"text": "FBN1", "probability": 0.3}],
}


def test_merge_across_snippets_by_probability_deduplicated_top_five():
    ranked = merge_nbest(NBEST, question_of=question_id)
    assert ranked["5a1b"] == ["estrogen", "tam", "Breast cancer"]
    # fbn2 (0.85) and FBN2 (0.8) are one answer scoring 1.65, spelled as its most probable copy
    assert ranked["5c2d"] == ["fbn2", "ELN", "TGFBR1", "TGFBR2", "COL1A1"]
    assert merge_nbest(NBEST, combine="max", question_of=question_id)["5c2d"] == ["ELN", "fbn2", "TGFBR1", "TGFBR2", "COL1A1"]


def test_repeated_answers_add_up_and_overlong_or_empty_answers_are_dropped():
    nbest = {"q_000": [{"text": "estrogen", "probability": 0.5}, {"text": "TAM", "probability": 0.3},
                       {"text": "x" * 101, "probability": 0.9}, {"text": " ", "probability": 0.8}],
             "q_001": [{"text": "tam", "probability": 0.3}]}
    assert merge_nbest(nbest, question_of=question_id) == {"q": ["TAM", "estrogen"]}  # 0.3 + 0.3 > 0.5


def test_strict_lenient_mrr_with_ranks_two_and_six():
    s = bioasq_scores(GOLD, merge_nbest(NBEST, question_of=question_id))
    assert s["rank_of_first_correct"] == {"5a1b": 2, "5c2d": None}
    assert s["strict_accuracy"] == 0.0
    assert s["lenient_accuracy"] == 0.5
    assert s["mrr"] == pytest.approx((1 / 2 + 0) / 2)


def test_first_answer_matching_any_synonym_case_insensitively_is_strict():
    s = bioasq_scores(GOLD, {"5a1b": ["NOLVADEX"], "5c2d": ["fbn1"]})
    assert s["strict_accuracy"] == s["lenient_accuracy"] == s["mrr"] == 1.0
    # the official Java evaluator lower-cases but does not trim: " nolvadex " is wrong
    s = bioasq_scores(GOLD, {"5a1b": [" nolvadex "], "5c2d": ["fbn1"]})
    assert s["rank_of_first_correct"]["5a1b"] is None and s["strict_accuracy"] == 0.5


def test_question_listed_without_answers_scores_zero_and_missing_one_is_skipped():
    s = bioasq_scores(GOLD, {"5a1b": [], "5c2d": ["FBN1"]})
    assert s["strict_accuracy"] == 0.5 and s["answered"] == 1 and s["evaluated"] == 2
    s = bioasq_scores(GOLD, {"5c2d": ["FBN1"]})  # Java: a question not in the submission is skipped
    assert s["strict_accuracy"] == 1.0 and s["evaluated"] == 1 and s["questions"] == 2


# --- hand-made fixture: synonyms, answers repeated across snippets, fewer than five answers ---
# golden exact_answer [["Imatinib", "Gleevec"], ["STI-571"]] etc., flattened as read_bioasq_golden does
GOLD2 = {"q1": ["Imatinib", "Gleevec", "STI-571"], "q2": ["BRCA1"], "q3": ["dopamine"], "q4": ["TNF"]}
NBEST2 = {
    # q1: gleevec 0.2 + Gleevec 0.35 = 0.55 > nilotinib 0.5 → ["Gleevec", "nilotinib", "dasatinib"]
    "q1_001": [{"text": "nilotinib", "probability": 0.5}, {"text": "gleevec", "probability": 0.2}],
    "q1_002": [{"text": "Gleevec", "probability": 0.35}, {"text": "dasatinib", "probability": 0.1}],
    # q2: ["BRCA2", "TP53", "brca1"] → first correct at rank 3
    "q2_001": [{"text": "BRCA2", "probability": 0.6}, {"text": "TP53", "probability": 0.3}],
    "q2_002": [{"text": "brca1", "probability": 0.25}],
    # q3: serotonin twice, the blank answer dropped → ["serotonin"], wrong
    "q3_001": [{"text": "serotonin", "probability": 0.9}],
    "q3_002": [{"text": "Serotonin", "probability": 0.4}, {"text": " ", "probability": 0.8}],
    # q4: no snippet predictions at all
}


def test_hand_made_fixture_sacc_lacc_mrr():
    ranked = merge_nbest(NBEST2, question_of=question_id)
    assert ranked == {"q1": ["Gleevec", "nilotinib", "dasatinib"], "q2": ["BRCA2", "TP53", "brca1"],
                      "q3": ["serotonin"]}
    s = bioasq_scores(GOLD2, ranked)
    # q4 is not in the submission → skipped: 3 questions, ranks 1, 3, none
    # SAcc = 1/3, LAcc = 2/3, MRR = (1 + 1/3 + 0) / 3 = 4/9
    assert s["rank_of_first_correct"] == {"q1": 1, "q2": 3, "q3": None}
    assert (s["strict_accuracy"], s["lenient_accuracy"], s["mrr"]) == pytest.approx((1 / 3, 2 / 3, 4 / 9))
    # every golden question listed (what `evaluate bioasq` submits): q4 scores 0 → 4 questions
    # SAcc = 1/4, LAcc = 2/4, MRR = (1 + 1/3 + 0 + 0) / 4 = 1/3
    s = bioasq_scores(GOLD2, {q: ranked.get(q, []) for q in GOLD2})
    assert (s["strict_accuracy"], s["lenient_accuracy"], s["mrr"]) == pytest.approx((1 / 4, 2 / 4, 1 / 3))
    assert s["evaluated"] == 4 and s["answered"] == 3


def test_submitted_synonym_lists_count_only_their_first_element_and_all_answers_are_scored():
    sub = {"q1": [["nilotinib", "Imatinib"], ["GLEEVEC"]],  # Imatinib is 2nd synonym: ignored → rank 2
           "q2": [[], ["brca1"]],  # an empty answer still takes rank 1 → rank 2
           "q3": [["Dopamine "]],  # not trimmed → wrong
           "q4": ["a", "b", "c", "d", "e", "tnf"]}  # the Java code scores a sixth answer too → rank 6
    s = bioasq_scores(GOLD2, sub)
    assert s["rank_of_first_correct"] == {"q1": 2, "q2": 2, "q3": None, "q4": 6}
    # SAcc = 0, LAcc = 3/4, MRR = (1/2 + 1/2 + 0 + 1/6) / 4 = 7/24
    assert (s["strict_accuracy"], s["lenient_accuracy"], s["mrr"]) == pytest.approx((0, 3 / 4, 7 / 24))


def test_submission_json_has_official_shape(tmp_path):
    out = tmp_path / "sub.json"
    write_submission(out, merge_nbest(NBEST, question_of=question_id))
    doc = json.loads(out.read_text())
    q = {x["id"]: x for x in doc["questions"]}
    assert q["5a1b"]["exact_answer"] == [["estrogen"], ["tam"], ["Breast cancer"]]
    assert q["5c2d"]["type"] == "factoid" and len(q["5c2d"]["exact_answer"]) == 5


def test_nbest_entry_without_probability_is_rejected():
    with pytest.raises(ValueError, match=r"5a1b_001\[0\]"):
        merge_nbest({"5a1b_001": [{"text": "x"}]}, question_of=question_id)
