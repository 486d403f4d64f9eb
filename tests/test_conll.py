"""CoNLL NER reader: both layouts, all schemes, scheme conversion, the prediction writer, and
one clear error (file + line) per broken file."""

import pytest

from biomegatron_nemo.data.conll import read_conll, to_iob2, write_conll_predictions
from biomegatron_nemo.common.errors import DataFormatError

from _data_paths import BROKEN, FIXTURES


def test_tab_separated_iob2_sentences_words_and_lines():
    sents = read_conll(FIXTURES / "ner_iob2.tsv")
    assert [len(s) for s in sents] == [6, 3, 3]
    words, tags = sents[0]
    assert words[:3] == ["Cisplatin", "induced", "acute"]
    assert tags == ["B-Chemical", "O", "B-Disease", "I-Disease", "I-Disease", "O"]
    # an I- after O is accepted as written (conlleval gives it meaning, not the reader)
    assert sents[1].tags == ["B-Chemical", "O", "I-Disease"]
    assert [s.line for s in sents] == [1, 8, 13]  # two blank lines before the third sentence


def test_multicolumn_conll_with_docstart_takes_first_and_last_column():
    sents = read_conll(FIXTURES / "ner_conll_iob1.txt", scheme="IOB1")
    assert [s.words for s in sents] == [["Lithium", "toxicity", "."], ["Naloxone", "and", "morphine", "."]]
    assert sents[1].tags == ["I-Chemical", "O", "B-Chemical", "O"]


def test_iobes_and_untyped_tags():
    assert read_conll(FIXTURES / "ner_iobes.tsv", scheme="IOBES")[0].tags[2:] == ["E-Disease", "O", "S-Chemical"]
    assert read_conll(FIXTURES / "ner_untyped.tsv")[0].tags == ["B", "I", "O", "O"]


def test_to_iob2_follows_conlleval_chunk_starts():
    assert to_iob2(["I-Chemical", "I-Disease", "O", "I-Chemical", "B-Chemical"]) == \
        ["B-Chemical", "B-Disease", "O", "B-Chemical", "B-Chemical"]
    assert to_iob2(["B-Disease", "I-Disease", "E-Disease", "S-Chemical", "S-Chemical"]) == \
        ["B-Disease", "I-Disease", "I-Disease", "B-Chemical", "B-Chemical"]
    assert to_iob2(["I", "I", "O", "B"]) == ["B", "I", "O", "B"]


def test_prediction_writer_round_trips_through_the_reader(tmp_path):
    out = tmp_path / "pred.txt"
    write_conll_predictions(out, [["Lithium carbonate", "toxicity"]], [["B-Chemical", "B-Disease"]],
                            [["B-Chemical", "O"]])
    assert out.read_text() == "Lithium_carbonate B-Chemical B-Chemical\ntoxicity B-Disease O\n\n"
    (s,) = read_conll(out)
    assert s.words == ["Lithium_carbonate", "toxicity"] and s.tags == ["B-Chemical", "O"]
    with pytest.raises(ValueError, match="sentence 0"):
        write_conll_predictions(out, [["a", "b"]], [["O", "O"]], [["O"]])


@pytest.mark.parametrize("name, scheme, line, fragment", [
    ("ner_wrong_columns.tsv", "IOB2", 2, "expected 2 columns as on line 1, found 3"),
    ("ner_empty_token.tsv", "IOB2", 2, "empty token"),
    ("ner_bad_tag.tsv", "IOB2", 4, "'X-Disease' is not a valid IOB2 tag"),
    ("ner_iobes_tag_in_iob2.tsv", "IOB2", 2, "'E-Disease' is not a valid IOB2 tag"),
    ("ner_one_column.tsv", "IOB2", 1, "at least 2 columns"),
    ("ner_no_sentences.tsv", "IOB2", None, "no sentences"),
    ("ner_not_utf8.tsv", "IOB2", 2, "invalid UTF-8 (byte 0xff at column 7)"),
])
def test_broken_files_name_file_and_line(name, scheme, line, fragment):
    path = BROKEN / name
    with pytest.raises(DataFormatError) as e:
        read_conll(path, scheme=scheme)
    where = f"{path}:{line}:" if line else f"{path}:"
    assert str(e.value).startswith(where)
    assert fragment in str(e.value)
    assert e.value.line == line


def test_unknown_scheme_is_rejected():
    with pytest.raises(ValueError, match="unknown tag scheme"):
        read_conll(FIXTURES / "ner_iob2.tsv", scheme="BILOU")


def test_byte_order_mark_is_not_part_of_the_first_token():
    assert read_conll(FIXTURES / "ner_bom.tsv")[0].words == ["Cisplatin"]
