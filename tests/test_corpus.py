"""The one corpus reader (common/corpus.py): formats, line numbers, bad input, skip counts."""

import gzip
import json

import pytest

from biomegatron_nemo.common.corpus import CorpusCounts, iter_documents
from biomegatron_nemo.common.errors import DataFormatError

DOCS = ["Mice received 2.5 mg of drug.", "All mice survived.", "Toxicity was rare."]


def _read(path, **kwargs):
    counts = CorpusCounts()
    return list(iter_documents(path, counts=counts, **kwargs)), counts


def test_plain_text_one_document_per_line_with_empty_lines_counted(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(f"{DOCS[0]}\n\n  {DOCS[1]}  \n   \n{DOCS[2]}", encoding="utf-8")
    docs, counts = _read(path)
    assert docs == [(1, DOCS[0]), (3, DOCS[1]), (5, DOCS[2])]
    assert counts == CorpusCounts(empty_lines=2)


def test_bom_and_crlf_read_like_plain_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(DOCS).encode() + b"\r\n")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(json.dumps({"text": d}).encode() for d in DOCS))
    for p in (path, jsonl):
        assert [text for _, text in _read(p)[0]] == DOCS


@pytest.mark.parametrize("name", ["c.jsonl.gz", "c.json", "c.ndjson", "c.jsonl"])
def test_json_lines_by_suffix_gzip_by_content(tmp_path, name):
    body = "\n".join(json.dumps({"body": d, "id": i}) for i, d in enumerate(DOCS)).encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    assert [text for _, text in _read(path, json_key="body")[0]] == DOCS


def test_gzip_is_recognised_by_magic_bytes_not_by_name(tmp_path):
    packed = tmp_path / "corpus.data"
    packed.write_bytes(gzip.compress("\n".join(DOCS).encode()))
    not_packed = tmp_path / "corpus.txt.gz"  # a misleading name on plain text
    not_packed.write_text("\n".join(DOCS), encoding="utf-8")
    assert _read(packed)[0] == _read(not_packed)[0] == [(1, DOCS[0]), (2, DOCS[1]), (3, DOCS[2])]


def test_blank_line_documents_join_their_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n\nMice received\n2.5 mg.\n\n\nAll mice\r\nsurvived.\n", encoding="utf-8")
    docs, counts = _read(path, blank_line_documents=True)
    assert docs == [(3, "Mice received 2.5 mg."), (7, "All mice survived.")]
    assert counts.empty_lines == 0  # blank lines are separators here, not skipped documents


def test_invalid_utf8_names_file_line_and_byte_or_is_skipped(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good\nok \xe9 not utf-8\nfine\n")
    with pytest.raises(DataFormatError, match=rf"^{path}:2: invalid UTF-8 \(byte 0xe9 at column 4\)"):
        _read(path)
    docs, counts = _read(path, skip_bad_lines=True)
    assert docs == [(1, "good"), (3, "fine")] and counts.bad_lines == 1


@pytest.mark.parametrize("line, problem", [
    ("not json", "invalid JSON: Expecting value (column 1)"),
    ('["a list"]', "expected an object with a string 'text' field, got list"),
    ('{"body": "x"}', "no 'text' field"),
    ('{"text": 3}', "'text' is int, not a string"),
])
def test_bad_json_lines_say_what_is_wrong(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        _read(path)
    assert str(err.value) == f"{path}:2: [text] bad JSON line ({problem})"
    docs, counts = _read(path, skip_bad_lines=True)
    assert docs == [(1, "ok")] and counts.bad_lines == 1


def test_corrupt_gzip_names_file_and_line_or_drops_the_rest(tmp_path):
    body = "".join(f"document number {i} about aspirin\n" for i in range(20_000)).encode()
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(gzip.compress(body)[:20_000])
    with pytest.raises(DataFormatError, match=rf"^{path}:\d+: corrupt gzip stream \(EOFError"):
        _read(path)
    docs, counts = _read(path, skip_bad_lines=True)
    assert 0 < len(docs) < 20_000 and docs[-1][0] == len(docs)
    assert counts.truncated_files == [str(path)]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt' does not exist"):
        _read(tmp_path / "nope.txt")


def test_skipped_bad_lines_are_counted_and_the_first_ones_located(tmp_path, caplog):
    from biomegatron_nemo.common.corpus import REPORTED_BAD_LINES

    path = tmp_path / "bad.jsonl"
    path.write_text("".join('{"text": "ok"}\n' if i % 2 else "not json\n" for i in range(2 * REPORTED_BAD_LINES + 10)))
    docs, counts = _read(path, skip_bad_lines=True)
    assert len(docs) == counts.bad_lines == REPORTED_BAD_LINES + 5
    assert len(counts.bad_line_examples) == REPORTED_BAD_LINES
    assert counts.bad_line_examples[1] == f"{path}:3: [text] bad JSON line (invalid JSON: Expecting value (column 1))"
    assert f"skipped bad line {path}:1: [text] bad JSON line" in caplog.text
    assert "further bad lines are counted, not logged" in caplog.text


def test_a_file_without_documents_is_an_error_or_skipped_and_listed(tmp_path):
    empty, blank = tmp_path / "empty.txt", tmp_path / "blank.jsonl"
    empty.write_bytes(b"")
    blank.write_text('{"text": "  "}\n\n')
    for path in (empty, blank):
        with pytest.raises(DataFormatError, match=rf"^{path}: no documents"):
            _read(path)
        docs, counts = _read(path, skip_bad_lines=True)
        assert docs == [] and counts.empty_files == [str(path)] and counts.bad_lines == 0
    bad_only = tmp_path / "bad_only.txt"
    bad_only.write_bytes(b"\xff\n")
    _, counts = _read(bad_only, skip_bad_lines=True)
    assert counts.bad_lines == 1 and counts.empty_files == []  # reported once, as the bad line it is
