"""ChemProt / generic TSV readers and the sequence-classification dataset."""

import pytest

from biomegatron_nemo.data.chemprot import (
    CHEMPROT_SPECIAL_TOKENS, SequenceClassificationDataset, read_chemprot, read_classification_tsv)
from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.tokenizers.wordpiece import WordPieceTokenizer

from _data_paths import BROKEN, FIXTURES


def test_blue_file_with_header_keeps_quotes_and_ids():
    rows = read_chemprot(FIXTURES / "chemprot_header.tsv")
    assert [(r.guid, r.label, r.line) for r in rows] == [("1.T1.T2", "CPR:4", 2), ("1.T1.T3", "false", 3),
                                                         ("2.T5.T6", "CPR:3", 4)]
    assert rows[2].text == '@CHEM-GENE$ binds "tightly" to the receptor.'


def test_generic_sentence_label_tsv():
    rows = read_classification_tsv(FIXTURES / "sentences_labels.tsv")
    assert [(r.text, r.label) for r in rows] == [("Aspirin reduces fever.", "positive"),
                                                 ("No effect was observed.", "negative")]
    assert rows[0].guid == "sentences_labels.tsv:1"


@pytest.mark.parametrize("name, line, fragment", [
    ("chemprot_bad_label.tsv", 2, "label 'CPR:7' is not one of"),
    ("chemprot_wrong_columns.tsv", 2, "expected 3 tab-separated columns"),
])
def test_broken_rows_name_file_and_line(name, line, fragment):
    with pytest.raises(DataFormatError) as e:
        read_chemprot(BROKEN / name)
    assert str(e.value).startswith(f"{BROKEN / name}:{line}:") and fragment in str(e.value)


def _tokenizer(special=CHEMPROT_SPECIAL_TOKENS):
    return WordPieceTokenizer(str(FIXTURES / "vocab.txt"), special_tokens=special)


def test_dataset_keeps_entity_masks_whole_and_encodes_labels():
    tok = _tokenizer()
    ds = SequenceClassificationDataset(read_chemprot(FIXTURES / "chemprot_header.tsv"), tok)
    item = ds[0]
    tokens = [tok.id_to_token(i) for i in item["input_ids"]]
    assert tokens[:2] == ["[CLS]", "@CHEMICAL$"] and "@GENE$" in tokens and tokens[-1] == "[SEP]"
    assert [ds[i]["labels"] for i in range(3)] == [1, 5, 0]  # CPR:4, false, CPR:3 in CHEMPROT_LABELS
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch["labels"].tolist() == [1, 5] and batch["input_ids"].shape[0] == 2


def test_dataset_refuses_a_tokenizer_that_would_split_the_masks():
    with pytest.raises(ValueError, match="special_tokens="):
        SequenceClassificationDataset(read_chemprot(FIXTURES / "chemprot_header.tsv"), _tokenizer(()))


def test_long_text_is_truncated_and_counted():
    tok = _tokenizer()
    ds = SequenceClassificationDataset(read_chemprot(FIXTURES / "chemprot_header.tsv"), tok, max_seq_length=5)
    assert ds.n_truncated == 3 and all(len(ds[i]["input_ids"]) == 5 for i in range(3))
