"""SQuAD / BioASQ readers, golden files, QA features (offsets, windows, mismatch counts), decoding."""

import pytest

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.data.qa_decoding import decode_predictions
from biomegatron_nemo.data.squad import (
    QADataset, QAExample, build_qa_features, char_to_token_span, doc_windows, question_id,
    read_bioasq_golden, read_squad)
from biomegatron_nemo.tokenizers.wordpiece import WordPieceTokenizer

from _data_paths import BROKEN, FIXTURES


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer(str(FIXTURES / "vocab.txt"))


def test_squad_v2_reader():
    ex = read_squad(FIXTURES / "squad_v2_small.json")
    assert [e.id for e in ex] == ["q1", "q2", "q3", "q4", "q5"]
    assert ex[1].answers == [{"text": "1897", "answer_start": 58}, {"text": "in 1897", "answer_start": 55}]
    assert ex[2].is_impossible and ex[2].answers == [] and ex[2].plausible_answers[0]["text"] == "Aspirin"
    assert ex[0].title == "Test"


def test_bioasq_ids_and_golden_files():
    ex = read_squad(FIXTURES / "bioasq_squad_format.json")
    assert [question_id(e.id) for e in ex] == ["5a1b", "5a1b", "5c2d"]
    assert question_id("plain-id") == "plain-id" and question_id("a_b") == "a_b"
    official = read_bioasq_golden(FIXTURES / "bioasq_golden.json")
    assert set(official) == {"5a1b", "5c2d"}  # the yes/no question is skipped
    assert official["5a1b"].synonyms == ["Tamoxifen", "TAM", "Nolvadex"]
    assert official["5c2d"].synonyms == ["FBN1"]
    from_squad = read_bioasq_golden(FIXTURES / "bioasq_squad_format.json")
    assert from_squad["5a1b"].synonyms == ["Tamoxifen", "TAM"]


@pytest.mark.parametrize("name, line, fragment", [
    ("squad_invalid_json.json", 4, "invalid JSON"),
    ("squad_missing_context.json", None, "[data[0].paragraphs[0]] missing key 'context'"),
    ("squad_answer_start_outside.json", None, "answers[0].answer_start] answer_start 99 outside"),
])
def test_broken_json_names_file_and_place(name, line, fragment):
    with pytest.raises(DataFormatError) as e:
        read_squad(BROKEN / name)
    assert str(e.value).startswith(f"{BROKEN / name}:{line}:" if line else f"{BROKEN / name}:")
    assert fragment in str(e.value)


def test_broken_golden_names_the_field():
    with pytest.raises(DataFormatError, match=r"questions\[0\]\.exact_answer"):
        read_bioasq_golden(BROKEN / "bioasq_golden_bad_exact_answer.json")


def test_char_to_token_span_and_windows():
    offsets = [(0, 7), (8, 10), (11, 15), (16, 20)]
    assert char_to_token_span(offsets, 8, 15) == (1, 2)
    assert char_to_token_span(offsets, 9, 10) == (1, 1)  # inside a token
    assert char_to_token_span(offsets, 7, 8) is None  # only whitespace
    assert doc_windows(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert doc_windows(3, 4, 2) == [(0, 3)]


def test_training_features_map_answers_and_report_mismatches(tok):
    ex = read_squad(FIXTURES / "squad_v2_small.json")
    feats, stats = build_qa_features(ex, tok, max_seq_length=64, doc_stride=16, training=True)
    assert stats.unmatched == ["q5"] and stats.relocated == 1  # q4's answer_start was off by 3
    assert stats.features == 4 and "not found in context: 1" in stats.summary()
    by_ex = {ex[f.example_index].id: f for f in feats}
    for qid, text in (("q1", "pain"), ("q2", "1897"), ("q4", "Aspirin")):
        f = by_ex[qid]
        context = ex[f.example_index].context
        span = context[f.offsets[f.start_position][0]:f.offsets[f.end_position][1]]
        assert span == text
        assert f.token_type_ids[f.start_position] == 1
    assert (by_ex["q3"].start_position, by_ex["q3"].end_position) == (0, 0)  # impossible → [CLS]


def test_long_context_windows_and_decoding_back_to_text(tok):
    ex = read_squad(FIXTURES / "squad_v2_small.json")[:2]
    ds = QADataset(ex, tok, max_seq_length=20, doc_stride=4, max_query_length=8, training=True)
    assert len(ds) > 2 and all(len(f.input_ids) <= 20 for f in ds.features)
    # each context token has its maximal context in exactly one window
    for ei in range(2):
        fs = [f for f in ds.features if f.example_index == ei]
        starts = [o[0] for f in fs for o, m in zip(f.offsets, f.max_context) if m]
        assert len(starts) == len(set(starts)) == len(tok.encode(ex[ei].context).ids)
    # logits peaking on the gold span of every window that holds it decode to the answer text
    start_logits, end_logits = {}, {}
    for i, f in enumerate(ds.features):
        n = len(f.input_ids)
        s, e = [0.0] * n, [0.0] * n
        if f.start_position:
            s[f.start_position], e[f.end_position] = 5.0, 5.0
        start_logits[i], end_logits[i] = s, e
    preds, nbest, _ = decode_predictions(ex, ds.features, start_logits, end_logits, n_best=20)
    assert preds == {"q1": "pain", "q2": "1897"}
    assert nbest["q1"][0]["probability"] > nbest["q1"][1]["probability"]
    assert abs(sum(x["probability"] for x in nbest["q1"]) - 1) < 1e-9
    batch = ds.collate_fn([ds[0], ds[1]])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions",
                          "end_positions", "feature_index"}


def test_v2_decoding_prefers_null_when_its_score_wins(tok):
    ex = read_squad(FIXTURES / "squad_v2_small.json")[2:3]
    feats, _ = build_qa_features(ex, tok, max_seq_length=64)
    n = len(feats[0].input_ids)
    s = [10.0] + [0.0] * (n - 1)
    preds, nbest, odds = decode_predictions(ex, feats, {0: s}, {0: s}, version_2=True)
    assert preds == {"q3": ""} and odds["q3"] > 0 and nbest["q3"][0]["text"] == ""


@pytest.mark.parametrize("context, answer", [
    ("Le  café\u00a0au lait   est bon : naïve β-blocker use.", "naïve β-blocker"),  # accents, odd spaces
    ("Mutations   in\tFBN1 cause Marfan syndrome", "Marfan syndrome"),  # the very end of the context
    ("IL-2 (interleukin 2) levels rose", "IL-2"),  # punctuation inside and after the answer
])
def test_decoded_answers_are_exact_substrings_of_the_original_context(tok, context, answer):
    start = context.index(answer)
    ex = [QAExample("u", "which one?", context, [{"text": answer, "answer_start": start}])]
    feats, stats = build_qa_features(ex, tok, max_seq_length=24, doc_stride=4, max_query_length=4, training=True)
    assert not stats.unmatched
    start_logits, end_logits = {}, {}
    for i, f in enumerate(feats):
        n = len(f.input_ids)
        s, e = [0.0] * n, [0.0] * n
        if f.start_position:
            s[f.start_position], e[f.end_position] = 8.0, 8.0
        start_logits[i], end_logits[i] = s, e
    preds, nbest, _ = decode_predictions(ex, feats, start_logits, end_logits)
    assert preds == {"u": answer}
    best = nbest["u"][0]
    assert context[best["start"]:best["end"]] == answer
    assert all(context[x["start"]:x["end"]] == x["text"] for x in nbest["u"])


def test_evaluation_features_keep_every_question_and_label_the_answers(tok):
    ex = read_squad(FIXTURES / "squad_v2_small.json")
    feats, stats = build_qa_features(ex, tok, max_seq_length=64, doc_stride=16)
    assert {f.example_index for f in feats} == set(range(len(ex)))  # q5 (answer not in context) kept
    assert stats.unmatched == ["q5"]
    by_ex = {ex[f.example_index].id: f for f in feats}
    assert by_ex["q1"].start_position > 0 and by_ex["q3"].start_position == 0
