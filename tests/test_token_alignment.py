"""Sub-token label alignment (both modes), sentence windows, and predictions back to words.

Uses the real WordPieceTokenizer over a hand-made vocabulary (tests/fixtures/data/vocab.txt)
in which "Cisplatin" → cis ##plat ##in, "nephrotoxicity" → nephro ##toxicity,
"hypertension" → hyper ##tension.
"""

import pytest

from biomegatron_nemo.data.conll import Sentence
from biomegatron_nemo.data.token_classification import (
    LabelMap, TokenClassificationDataset, align_labels, window_spans)
from biomegatron_nemo.tokenizers.wordpiece import WordPieceTokenizer

from _data_paths import FIXTURES

WORDS = ["Cisplatin", "induced", "nephrotoxicity", "in", "hypertension", "patients", "."]
TAGS = ["B-Chemical", "O", "B-Disease", "O", "B-Disease", "O", "O"]
# sub-tokens: cis ##plat ##in induced nephro ##toxicity in hyper ##tension patients .
WORD_IDS = [0, 0, 0, 1, 2, 2, 3, 4, 4, 5, 6]


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer(str(FIXTURES / "vocab.txt"))


@pytest.fixture()
def sentence():
    return [Sentence(WORDS, TAGS, 1, "mem.tsv")]


def test_tokenizer_splits_as_the_fixture_assumes(tok):
    assert tok.encode_words(WORDS).word_ids == WORD_IDS


def test_first_subtoken_labels_only_first_piece():
    assert align_labels(WORD_IDS, TAGS, "first_subtoken") == [
        "B-Chemical", None, None, "O", "B-Disease", None, "O", "B-Disease", None, "O", "O"]


def test_all_subtokens_continuations_get_inside_tag_or_o():
    assert align_labels(WORD_IDS, TAGS, "all_subtokens") == [
        "B-Chemical", "I-Chemical", "I-Chemical", "O", "B-Disease", "I-Disease", "O",
        "B-Disease", "I-Disease", "O", "O"]
    assert align_labels([0, 0], ["O"], "all_subtokens") == ["O", "O"]
    with pytest.raises(ValueError, match="IOB2"):
        align_labels([0, 0], ["S-Chemical"], "all_subtokens")


def test_label_map_puts_o_first_and_adds_inside_tags(sentence):
    lm = LabelMap.from_sentences(sentence)
    assert lm.labels == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    with pytest.raises(ValueError, match="'B-Gene' is not in the label map"):
        lm.encode(["B-Gene"], "x.tsv:3")


def test_short_sentence_is_one_window_with_ignored_positions(tok, sentence):
    lm = LabelMap.from_sentences(sentence)
    ds = TokenClassificationDataset(sentence, tok, lm, max_seq_length=32, mode="first_subtoken")
    assert len(ds) == 1
    item = ds[0]
    assert item["input_ids"][0] == tok.cls_id and item["input_ids"][-1] == tok.sep_id
    assert item["labels"] == [-100, 1, -100, -100, 0, 3, -100, 0, 3, -100, 0, 0, -100]
    ds_all = TokenClassificationDataset(sentence, tok, lm, max_seq_length=32, mode="all_subtokens")
    assert ds_all[0]["labels"] == [-100, 1, 2, 2, 0, 3, 4, 0, 3, 4, 0, 0, -100]


def test_window_spans_cover_everything_and_prefer_word_starts():
    # worked by hand: step back from end - overlap to a word start when one is in range
    assert window_spans(WORD_IDS, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)]
    assert window_spans(WORD_IDS, 20, 2) == [(0, 11)]


def test_long_sentence_is_windowed_never_truncated_and_maps_back(tok, sentence):
    lm = LabelMap.from_sentences(sentence)
    for mode in ("first_subtoken", "all_subtokens"):
        ds = TokenClassificationDataset(sentence, tok, lm, max_seq_length=6, mode=mode, window_overlap=2)
        assert len(ds) == 5 and all(len(ds[i]["input_ids"]) <= 6 for i in range(len(ds)))
        # feed the gold labels back as predictions (ignored positions → any id)
        preds = [[max(x, 0) for x in ds[i]["labels"]] for i in range(len(ds))]
        assert ds.predictions_to_tags(preds) == [TAGS]
    # window 1 starts at "##in", a continuation: it is not treated as word 0's first piece
    assert ds.windows[1].first_positions == [2, 3]


def test_each_word_takes_the_window_where_it_is_furthest_from_an_edge(tok, sentence):
    lm = LabelMap.from_sentences(sentence)
    ds = TokenClassificationDataset(sentence, tok, lm, max_seq_length=6, window_overlap=2)
    # window k predicts label id k everywhere; hand-worked winners per word:
    # w0 only in window 0; w1 sub 3: window 1 (distance 1); w2 sub 4: window 1; w3 sub 6: window 2;
    # w4 sub 7: window 3; w5 sub 9: window 4; w6 sub 10: only window 4 at an edge.
    preds = [[k] * 6 for k in range(5)]
    assert ds.predictions_to_tags(preds) == [lm.decode([0, 1, 1, 2, 3, 4, 4])]
    # rows given out of order with their window indices give the same answer
    assert ds.predictions_to_tags(preds[::-1], window_indices=[4, 3, 2, 1, 0]) == [lm.decode([0, 1, 1, 2, 3, 4, 4])]
    with pytest.raises(ValueError, match="no prediction for sentence 0 word"):
        ds.predictions_to_tags(preds[:2], window_indices=[0, 1])


def test_collate_pads_with_the_right_values(tok, sentence):
    lm = LabelMap.from_sentences(sentence)
    ds = TokenClassificationDataset(sentence + [Sentence(["in", "."], ["O", "O"])], tok, lm, max_seq_length=32)
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 13)
    assert batch["input_ids"][1, 4:].tolist() == [tok.pad_id] * 9
    assert batch["labels"][1, 4:].tolist() == [-100] * 9
    assert batch["attention_mask"][1].tolist() == [1] * 4 + [0] * 9
    assert batch["word_ids"][1, :5].tolist() == [-1, 0, 1, -1, -1]
    assert batch["sentence_index"].tolist() == [0, 1]


def test_label_map_for_untyped_tags_adds_i():
    assert LabelMap.from_sentences([Sentence(["Cocaine"], ["B"])]).labels == ["O", "B", "I"]
