"""Every reader against a corpus of broken files, and the valid-but-unusual forms it must accept.

* ``fixtures/data/broken/``: one file per failure, its name's prefix choosing the reader; each
  must raise one DataFormatError whose message names the file and then the line or key
  (:data:`EXPECTED`, which must list every file of the folder).
* A 100 MB line (generated here, never committed) is refused by the line readers after reading
  1 MiB of it, and by the pretraining corpus reader after 16 MiB (or skipped and counted); in
  JSON, where one long line is normal (SQuAD's own files), it simply parses.
* CRLF line ends, a byte-order mark, trailing spaces and a missing final newline parse exactly
  as the clean fixture does, for every text reader.
"""

import gzip
import json
import tracemalloc
from functools import partial

import pytest

from biomegatron_nemo.common.corpus import MAX_CORPUS_LINE_BYTES, CorpusCounts, iter_documents
from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.common.files import MAX_LINE_BYTES
from biomegatron_nemo.data.chemprot import read_chemprot, read_classification_tsv
from biomegatron_nemo.data.conll import read_conll
from biomegatron_nemo.data.squad import read_bioasq_golden, read_squad
from biomegatron_nemo.data.token_classification import read_label_file
from biomegatron_nemo.analysis.evaluate import main as evaluate
from biomegatron_nemo.tokenizers.base import with_bert_specials
from biomegatron_nemo.tokenizers.sentencepiece import SentencePieceTokenizer
from biomegatron_nemo.tokenizers.wordpiece import WordPieceTokenizer, read_vocab

from _data_paths import BROKEN, FIXTURES

PRETRAINING = FIXTURES.parent / "pretraining"


def _re_predictions(path):
    # prediction files are checked by the evaluation command against a gold file
    if evaluate(["re", "--gold", str(FIXTURES / "chemprot_header.tsv"), "--pred", str(path)]) == 2:
        raise DataFormatError(path, None, "(reported on stderr)")


def _documents(path, **kwargs):
    return list(iter_documents(path, **kwargs))


READERS = {"ner_": read_conll, "chemprot_": read_chemprot, "squad_": read_squad,
           "bioasq_golden_": read_bioasq_golden, "re_pred_": _re_predictions, "vocab_": WordPieceTokenizer,
           "labels_": read_label_file, "corpus_": _documents, "spm_": SentencePieceTokenizer}

#: file → what its error says right after the file name (the line, or the JSON key, then the reason)
EXPECTED = {
    "bioasq_golden_bad_exact_answer.json": ": [questions[0].exact_answer] exact_answer must be (lists of) strings",
    "bioasq_golden_missing_id.json": ": [questions[0]] missing key 'id'",
    "bioasq_golden_no_factoid.json": ": no factoid questions found",
    "bioasq_golden_truncated.json": ":9: invalid JSON: Expecting ',' delimiter (column 17) (the file ends early",
    "chemprot_bad_label.tsv": ":2: [label] label 'CPR:7' is not one of",
    "chemprot_empty.tsv": ": no rows found",
    "chemprot_empty_sentence.tsv": ":1: [sentence] empty sentence",
    "chemprot_header_only.tsv": ": no rows found",
    "chemprot_not_utf8.tsv": ":2: invalid UTF-8 (byte 0xe9 at column 20)",
    "chemprot_spaces_not_tabs.tsv": ":2: [columns] expected 3 tab-separated columns (id, sentence, label), found 1; "
                                    "are its columns separated by spaces",
    "chemprot_truncated.tsv": ":3: [columns] expected 3 tab-separated columns (id, sentence, label), found 2",
    "chemprot_wrong_columns.tsv": ":2: [columns] expected 3 tab-separated columns",
    "corpus_blank_only.txt": ": no documents (an empty file, or only blank lines; a failed download?)",
    "corpus_empty.txt": ": no documents (an empty file, or only blank lines; a failed download?)",
    "corpus_missing_key.jsonl": ":2: [text] bad JSON line (no 'text' field)",
    "corpus_not_utf8.txt": ":2: invalid UTF-8 (byte 0xe9 at column 5)",
    "corpus_text_not_string.jsonl": ":1: [text] bad JSON line ('text' is list, not a string)",
    "corpus_truncated.jsonl": ":3: [text] bad JSON line (invalid JSON: Unterminated string",
    "corpus_truncated.txt.gz": ":1452: corrupt gzip stream (EOFError",
    "labels_empty.txt": ": no labels in label map file",
    "labels_not_utf8.txt": ":3: invalid UTF-8 (byte 0xe9 at column 8)",
    "labels_repeated.txt": ":4: [label] label 'B-Chemical' repeats line 2",
    "labels_with_ids.tsv": ":1: [label] 'O\\t0' holds a tab",
    "ner_bad_tag.tsv": ":4: [tag] tag 'X-Disease' is not a valid IOB2 tag",
    "ner_empty.tsv": ": no sentences found",
    "ner_empty_token.tsv": ":2: [token] empty token",
    "ner_iobes_tag_in_iob2.tsv": ":2: [tag] tag 'E-Disease' is not a valid IOB2 tag",
    "ner_mixed_tabs_spaces.tsv": ":2: [columns] expected 2 columns as on line 1, found 1; this line separates "
                                 "them with spaces, line 1 with tabs",
    "ner_no_sentences.tsv": ": no sentences found",
    "ner_not_utf8.tsv": ":2: invalid UTF-8 (byte 0xff at column 7)",
    "ner_one_column.tsv": ":1: [columns] expected at least 2 columns",
    "ner_utf16.tsv": ":1: invalid UTF-8: the file starts with a UTF-16 byte-order mark",
    "ner_wrong_columns.tsv": ":2: [columns] expected 2 columns as on line 1, found 3",
    "re_pred_unknown_label.tsv": ":2: [label]",
    "spm_binary.model": ": not a SentencePiece model: truncated, or another binary file",
    "spm_empty.model": ": empty file; expected a SentencePiece .model",
    "spm_text.model": ": not a SentencePiece model: a text file (a .vocab or vocab.txt?)",
    "squad_answer_start_is_text.json": ": [data[0].paragraphs[0].qas[0].answers[0].answer_start] expected int, got str",
    "squad_answer_start_outside.json": ": [data[0].paragraphs[0].qas[0].answers[0].answer_start] answer_start 99 "
                                       "outside the context",
    "squad_answers_not_a_list.json": ": [data[0].paragraphs[0].qas[0].answers] expected a list of answers, got dict",
    "squad_data_not_a_list.json": ": [<root>.data] expected list, got dict",
    "squad_duplicate_id.json": ": [data[0].paragraphs[1].qas[0].id] question id 'q1' repeats data[0].paragraphs[0].qas[0]",
    "squad_empty.json": ": empty file; expected JSON",
    "squad_invalid_json.json": ":4: invalid JSON: Expecting value (column 3)",
    "squad_is_a_golden_file.json": ": [<root>] a BioASQ golden file (questions[]), not SQuAD-format JSON",
    "squad_missing_context.json": ": [data[0].paragraphs[0]] missing key 'context'",
    "squad_missing_question.json": ": [data[0].paragraphs[0].qas[0]] missing key 'question'",
    "squad_not_utf8.json": ":8: invalid UTF-8 (byte 0xe9 at column 26)",
    "squad_truncated.json": ":12: invalid JSON: Unterminated string starting at (column 8) (the file ends early",
    "vocab_binary.txt": ": a binary file, not a vocab.txt (a SentencePiece .model?",
    "vocab_blank_line.txt": ":3: empty token",
    "vocab_empty.txt": ": empty vocabulary",
    "vocab_repeated_token.txt": ":5: token 'aspirin' repeats line 3",
    "vocab_sentencepiece.vocab": ":1: token '<unk>\\t0' contains whitespace; a vocab.txt has one token a line "
                                 "(a 'token<TAB>score' file such as SentencePiece's .vocab",
    "vocab_utf16.txt": ":1: invalid UTF-8: the file starts with a UTF-16 byte-order mark",
}


def _reader(name):
    return next((fn for prefix, fn in READERS.items() if name.startswith(prefix)), None)


def test_every_broken_file_has_a_reader_and_an_expected_message():
    names = {p.name for p in BROKEN.iterdir()}
    assert names == set(EXPECTED), (sorted(names - set(EXPECTED)), sorted(set(EXPECTED) - names))
    assert all(_reader(name) for name in names)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_broken_file_is_rejected_naming_file_and_line_or_key(name, capsys):
    path = BROKEN / name
    with pytest.raises(DataFormatError) as e:
        _reader(name)(path)
    message = str(e.value) + capsys.readouterr().err
    assert f"{path}{EXPECTED[name]}" in message, message


def test_a_truncated_sentencepiece_model_is_named(tmp_path):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(["aspirin inhibits the gene in mice"] * 20),
                                   model_prefix=str(tmp_path / "m"), vocab_size=20, minloglevel=2)
    data = (tmp_path / "m.model").read_bytes()
    cut = tmp_path / "cut.model"
    cut.write_bytes(data[: len(data) // 2])
    assert SentencePieceTokenizer(tmp_path / "m.model").vocab_size >= 20  # the whole file loads
    with pytest.raises(DataFormatError, match=rf"^{cut}: not a SentencePiece model: truncated"):
        SentencePieceTokenizer(cut)


# ------------------------------------------------------------------ a 100 MB line
HUGE = 100 << 20


@pytest.fixture(scope="module")
def huge_line(tmp_path_factory):
    """A 100 MB first line (what a file whose line ends were lost looks like), then a good line."""
    path = tmp_path_factory.mktemp("huge") / "huge.txt"
    chunk = b"aspirin " * (1 << 17)  # 1 MiB
    with open(path, "wb") as f:
        for _ in range(HUGE // len(chunk)):
            f.write(chunk)
        f.write(b"\tO\nMice received 2.5 mg of drug.\tO\n")
    return path


def _measured(fn):
    """What ``fn`` raised (or returned) and its peak Python memory: the bound shows the reader
    stopped after a bounded share of the line (time is not asserted: it depends on the machine)."""
    tracemalloc.start()
    try:
        result = fn()
    except DataFormatError as err:
        result = err
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize("reader", [read_conll, partial(read_classification_tsv, has_id=False),
                                    read_label_file, partial(read_vocab, specials=with_bert_specials(()))],
                         ids=["ner", "tsv", "labels", "vocab"])
def test_a_100mb_line_is_refused_after_1mib_of_it(huge_line, reader):
    error, peak = _measured(lambda: reader(huge_line))
    assert isinstance(error, DataFormatError)
    assert str(error).startswith(f"{huge_line}:1: line longer than {MAX_LINE_BYTES:,} bytes")
    assert peak < 8 * MAX_LINE_BYTES, peak


def test_a_100mb_corpus_line_is_refused_or_skipped_in_bounded_memory(huge_line):
    error, peak = _measured(lambda: _documents(huge_line))
    assert str(error).startswith(f"{huge_line}:1: line longer than {MAX_CORPUS_LINE_BYTES:,} bytes")
    assert peak < 3 * MAX_CORPUS_LINE_BYTES, peak
    counts = CorpusCounts()
    docs, peak = _measured(lambda: _documents(huge_line, skip_bad_lines=True, counts=counts))
    assert docs == [(2, "Mice received 2.5 mg of drug.\tO")]
    assert counts.bad_lines == 1 and counts.bad_line_examples[0].startswith(f"{huge_line}:1: line longer")
    assert peak < 3 * MAX_CORPUS_LINE_BYTES, peak


def test_a_100mb_gzipped_corpus_line_is_refused_without_inflating_it_whole(tmp_path):
    path = tmp_path / "huge.txt.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"a" * HUGE + b"\nAll mice survived.\n")
    docs, peak = _measured(lambda: _documents(path, skip_bad_lines=True))
    assert docs == [(2, "All mice survived.")]
    assert peak < 3 * MAX_CORPUS_LINE_BYTES, peak


def test_a_100mb_json_line_is_valid_json_and_parses(tmp_path):
    context = "aspirin " * (HUGE // 8)
    doc = {"data": [{"paragraphs": [{"context": context, "qas": [
        {"id": "q", "question": "Which drug?", "answers": [{"text": "aspirin", "answer_start": 0}]}]}]}]}
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(doc), encoding="utf-8")  # one line, like SQuAD's official files
    del doc, context
    (example,), _ = _measured(lambda: read_squad(path))
    assert len(example.context) == HUGE and example.answers[0]["text"] == "aspirin"


# ------------------------------------------------------------------ valid but unusual
def _variants(data: bytes):
    data = data.rstrip(b"\n") + b"\n"  # so that every variant differs from it
    lines = data.split(b"\n")
    return {
        "crlf": data.replace(b"\n", b"\r\n"),
        "bom": b"\xef\xbb\xbf" + data,
        "trailing_spaces": b"\n".join(line + b"  " if line else line for line in lines),
        "no_final_newline": data.rstrip(b"\n"),
        "all_at_once": b"\xef\xbb\xbf" + b"\r\n".join(line + b" " if line else line for line in lines).rstrip(b"\r\n"),
    }


def _sentences(path):
    return [(s.words, s.tags, s.line) for s in read_conll(path)]


def _rows(reader, path):
    return [(ex.guid, ex.text, ex.label, ex.line) for ex in reader(path)]


#: reader → (clean fixture, its parse as plain data, independent of the file's path)
CLEAN = {
    "ner": (FIXTURES / "ner_iob2.tsv", _sentences),
    "chemprot": (FIXTURES / "chemprot_header.tsv", partial(_rows, read_chemprot)),
    "classification_tsv": (FIXTURES / "sentences_labels.tsv", partial(_rows, read_classification_tsv)),
    "squad": (FIXTURES / "squad_v2_small.json", read_squad),
    "bioasq_golden": (FIXTURES / "bioasq_golden.json", read_bioasq_golden),
    "vocab": (FIXTURES / "vocab.txt", partial(read_vocab, specials=with_bert_specials(()))),
    "labels": (FIXTURES / "label_map.txt", read_label_file),
    "corpus_text": (PRETRAINING / "corpus.txt", _documents),
    "corpus_jsonl": (PRETRAINING / "corpus.jsonl", _documents),
    "corpus_blank_lines": (PRETRAINING / "corpus_blank_lines.txt", partial(_documents, blank_line_documents=True)),
}


@pytest.mark.parametrize("reader", sorted(CLEAN))
def test_crlf_bom_trailing_spaces_and_no_final_newline_parse_like_the_clean_file(reader, tmp_path):
    clean, parse = CLEAN[reader]
    expected = parse(clean)
    assert expected  # the fixture parses to something, so equality below means something
    for variant, data in _variants(clean.read_bytes()).items():
        path = tmp_path / variant / clean.name  # the same name: some parses carry it (row ids)
        path.parent.mkdir()
        path.write_bytes(data)
        assert parse(path) == expected, variant
