"""Corpus preprocessing: hand-counted documents/sentences/tokens, formats, bad input, workers."""

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.data.preprocess import main, preprocess_corpus
from biomegatron_nemo.tokenizers import WordPieceTokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "pretraining"
VOCAB = FIXTURES / "vocab.txt"
TOKENIZER_CFG = {"library": "wordpiece", "vocab_file": str(VOCAB)}
REAL_ABSTRACTS = Path(__file__).parents[2] / "shared" / "data" / "pubmed" / "PubMedAbstract_1MB.txt"
REAL_VOCAB = Path(__file__).parents[2] / "shared" / "data" / "vocab" / "bert-base-uncased-vocab.txt"

# corpus.txt, counted by hand with BERT's pre-tokenizer (punctuation is its own token):
#   line 1: "Mice received 2.5 mg of drug (see Fig. 2)." -> mice received 2 . 5 mg of drug ( see
#           fig . 2 ) .  = 15;  "All mice survived." = 4
#   line 2: empty
#   line 3: "Smith et al. reported lower doses, e.g. 1.5 mg." -> smith et al . reported lower
#           doses , e . g . 1 . 5 mg . = 17;  "Results were similar." = 4;
#           "Toxicity was rare." -> toxic ##ity was rare . = 5
#   line 4: "Dosing was b.i.d. for 2 weeks." -> dosing was b . i . d . for 2 weeks . = 12
SENTENCE_LENGTHS = [15, 4, 17, 4, 5, 12]
DOCUMENT_INDICES = [0, 2, 5, 6]


def read_indexed(prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    return IndexedDataset(str(prefix))


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer(str(VOCAB))


@pytest.mark.parametrize("name,kwargs", [
    ("corpus.txt", {}),
    ("corpus.jsonl", {}),
    ("corpus_blank_lines.txt", {"blank_line_documents": True}),
])
def test_hand_counted_fixture(tmp_path, tokenizer, name, kwargs):
    summary = preprocess_corpus([FIXTURES / name], tmp_path / "out", tokenizer, progress=False,
                                **kwargs)
    assert (summary.documents, summary.sentences, summary.tokens) == (3, 6, 57)
    # Plain text and JSON lines each have one empty document; blank lines are separators.
    assert summary.empty_lines_skipped == (0 if kwargs else 1)
    ds = read_indexed(tmp_path / "out")
    assert ds.sequence_lengths.tolist() == SENTENCE_LENGTHS
    assert ds.document_indices.tolist() == DOCUMENT_INDICES
    assert [tokenizer.inv_vocab[int(i)] for i in ds[4]] == ["toxic", "##ity", "was", "rare", "."]
    assert ds.index.dtype == np.uint16  # megatron-core's choice for a small vocabulary


def test_gzip_input_is_detected_by_content(tmp_path, tokenizer):
    packed = tmp_path / "corpus.data"  # no .gz suffix on purpose
    packed.write_bytes(gzip.compress((FIXTURES / "corpus.txt").read_bytes()))
    summary = preprocess_corpus([packed], tmp_path / "out", tokenizer, progress=False)
    assert (summary.documents, summary.sentences, summary.tokens) == (3, 6, 57)


def test_several_inputs_are_concatenated_in_order(tmp_path, tokenizer):
    summary = preprocess_corpus([FIXTURES / "corpus.txt", FIXTURES / "corpus.jsonl"],
                                tmp_path / "out", tokenizer, progress=False)
    assert (summary.files, summary.documents, summary.tokens) == (2, 6, 114)
    ds = read_indexed(tmp_path / "out")  # referenced: its arrays are views into its mmap
    assert ds.sequence_lengths.tolist() == SENTENCE_LENGTHS * 2


def test_min_sentences_drops_and_counts_short_documents(tmp_path, tokenizer):
    summary = preprocess_corpus([FIXTURES / "corpus.txt"], tmp_path / "out", tokenizer,
                                min_sentences=2, progress=False)
    assert (summary.documents, summary.sentences, summary.tokens) == (2, 5, 45)
    assert summary.short_documents_skipped == 1


def test_long_sentences_are_cut_for_megatron(tmp_path, tokenizer):
    summary = preprocess_corpus([FIXTURES / "corpus.txt"], tmp_path / "out", tokenizer,
                                max_sentence_tokens=5, progress=False)
    ds = read_indexed(tmp_path / "out")
    assert ds.sequence_lengths.tolist() == [5, 5, 5, 4, 5, 5, 5, 2, 4, 5, 5, 5, 2]
    assert ds.document_indices.tolist() == [0, 4, 10, 13]
    assert summary.long_sentences_split == 3 and summary.tokens == 57


def test_undecodable_bytes_name_file_and_line(tmp_path, tokenizer):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Mice received 2.5 mg.\n\xff\xfe broken line\nAll mice survived.\n")
    with pytest.raises(DataFormatError, match=rf"{bad}:2: invalid UTF-8 \(byte 0xff at column 1\)"):
        preprocess_corpus([bad], tmp_path / "out", tokenizer, progress=False)
    assert not (tmp_path / "out.bin").exists()  # no half-written dataset left behind
    summary = preprocess_corpus([bad], tmp_path / "out", tokenizer, skip_bad_lines=True,
                                progress=False)
    assert (summary.bad_lines_skipped, summary.documents) == (1, 2)


def test_bad_json_lines_name_file_and_line(tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "All mice survived."}\nnot json\n{"body": "x"}\n{"text": 3}\n')
    with pytest.raises(DataFormatError, match=rf"{bad}:2: \[text\] bad JSON line"):
        preprocess_corpus([bad], tmp_path / "out", tokenizer, progress=False)
    summary = preprocess_corpus([bad], tmp_path / "out", tokenizer, skip_bad_lines=True,
                                progress=False)
    assert (summary.bad_lines_skipped, summary.documents) == (3, 1)


def _corrupt_gzip(tmp_path, truncate):
    lines = (FIXTURES / "corpus.txt").read_bytes().replace(b"\n\n", b"\n")
    # Varied lines so the stream is long enough to break in its middle.
    body = b"".join(lines.replace(b"2.5", str(i).encode()) for i in range(500))
    data = bytearray(gzip.compress(body))
    if truncate:
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64
    path = tmp_path / "corpus.txt.gz"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("truncate", [True, False], ids=["truncated", "garbled"])
def test_corrupt_gzip_names_file_and_line(tmp_path, tokenizer, truncate):
    path = _corrupt_gzip(tmp_path, truncate)
    with pytest.raises(DataFormatError, match=rf"{path}:\d+: corrupt gzip stream"):
        preprocess_corpus([path], tmp_path / "out", tokenizer, progress=False)
    summary = preprocess_corpus([path], tmp_path / "out", tokenizer, skip_bad_lines=True,
                                progress=False)
    assert summary.truncated_files == [str(path)]
    assert summary.documents > 0  # the lines read before the break are kept


def test_workers_give_identical_output(tmp_path):
    # 150 documents = 5 worker tasks, so out-of-order completion would show.
    corpus = tmp_path / "corpus.txt"
    lines = (FIXTURES / "corpus.txt").read_text().splitlines()
    corpus.write_text("\n".join(line.replace("2.5", str(i)) for i in range(50) for line in lines))
    one = preprocess_corpus([corpus], tmp_path / "w1", TOKENIZER_CFG, workers=1, progress=False)
    two = preprocess_corpus([corpus], tmp_path / "w2", TOKENIZER_CFG, workers=2, progress=False)
    assert one.documents == two.documents == 150
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"w1{suffix}").read_bytes() == (tmp_path / f"w2{suffix}").read_bytes()


def test_command_line(tmp_path, capsys):
    summary_json = tmp_path / "summary.json"
    main(["--input", str(FIXTURES / "corpus.txt"), "--tokenizer-library", "wordpiece",
          "--vocab-file", str(VOCAB), "--output-prefix", str(tmp_path / "cli"), "--no-progress",
          "--summary-json", str(summary_json)])
    out = capsys.readouterr().out
    assert "documents written                    3" in out
    assert "skipped empty lines                  1" in out
    assert json.loads(summary_json.read_text())["tokens"] == 57
    assert os.path.getsize(tmp_path / "cli.bin") == 57 * 2  # uint16 ids

    with pytest.raises(SystemExit, match="needs --vocab-file"):
        main(["--input", str(FIXTURES / "corpus.txt"), "--output-prefix", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="corrupt|invalid UTF-8|does not exist"):
        main(["--input", str(tmp_path / "missing.txt"), "--vocab-file", str(VOCAB),
              "--output-prefix", str(tmp_path / "x")])


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--input", "--vocab-file", "--tokenizer-model", "--workers",
                   "--skip-bad-lines", "--blank-line-documents", "--min-sentences"):
        assert option in out


@pytest.mark.skipif(not (REAL_ABSTRACTS.exists() and REAL_VOCAB.exists()),
                    reason="real PubMed sample not present")
def test_real_pubmed_abstracts(tmp_path):
    cfg = {"library": "wordpiece", "vocab_file": str(REAL_VOCAB)}
    summary = preprocess_corpus([REAL_ABSTRACTS], tmp_path / "pubmed", cfg, progress=False)
    assert summary.documents == 725 and summary.empty_lines_skipped == 0
    assert 6000 < summary.sentences < 6700  # ~8.7 sentences per abstract
    ds = read_indexed(tmp_path / "pubmed")
    assert int(ds.sequence_lengths.sum()) == summary.tokens
    assert len(ds.document_indices) == 726


class _FailsInWorkers(WordPieceTokenizer):
    """Unpickling (in a spawned worker) fails, as a worker whose initializer crashes."""

    def __setstate__(self, state):
        raise RuntimeError("tokenizer cannot load in the worker")


def test_a_worker_that_cannot_start_fails_the_run_instead_of_hanging(tmp_path):
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        preprocess_corpus([FIXTURES / "corpus.txt"], tmp_path / "out", _FailsInWorkers(str(VOCAB)),
                          workers=2, progress=False)
    assert not (tmp_path / "out.bin").exists()


def test_bad_records_of_a_large_corpus_stop_the_run_or_are_skipped_counted_and_located(tmp_path, tokenizer, capsys):
    """Many shards, some broken: the default run stops at the first bad record naming file and line;
    --skip-bad-lines writes the rest and the summary says how many records were skipped and where."""
    good = FIXTURES / "corpus.txt"
    bad = tmp_path / "shard_1.jsonl"
    bad.write_text('{"text": "All mice survived."}\nnot json\n{"text": "Toxicity was rare."}\n{"body": 1}\n')
    empty = tmp_path / "shard_2.txt"
    empty.write_bytes(b"")
    inputs = [good, bad, empty]
    with pytest.raises(DataFormatError, match=rf"^{bad}:2: \[text\] bad JSON line"):
        preprocess_corpus(inputs, tmp_path / "out", tokenizer, progress=False)
    summary = preprocess_corpus(inputs, tmp_path / "out", tokenizer, skip_bad_lines=True, progress=False)
    assert (summary.documents, summary.bad_lines_skipped) == (5, 2)
    assert summary.bad_line_examples == [f"{bad}:2: [text] bad JSON line (invalid JSON: Expecting value (column 1))",
                                         f"{bad}:4: [text] bad JSON line (no 'text' field)"]
    assert summary.empty_files_skipped == [str(empty)]
    main(["--input", *map(str, inputs), "--vocab-file", str(VOCAB), "--output-prefix", str(tmp_path / "cli"),
          "--no-progress", "--skip-bad-lines"])
    out = capsys.readouterr().out
    assert f"skipped bad line {bad}:4: [text] bad JSON line (no 'text' field)" in out
    assert f"skipped empty file: {empty}" in out
    with pytest.raises(SystemExit, match=rf"{empty}: no documents .*--skip-bad-lines skips"):
        main(["--input", str(empty), "--vocab-file", str(VOCAB), "--output-prefix", str(tmp_path / "x")])
