"""Vocabulary training CLI: files the loaders take, input formats, too-small corpora, bad input."""

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm

from biomegatron_nemo.common.corpus import iter_documents
from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.tokenizers import SPECIAL_TOKENS, WordPieceTokenizer, build_tokenizer
from biomegatron_nemo.tokenizers.train import (MAX_CHUNK_CHARS, VocabularyTooLargeError, chunk,
                                               main, train_sentencepiece)

SAMPLE = Path(__file__).parent / "fixtures" / "tokenizers" / "biomedical_sample.txt"
PUBMED = Path(__file__).parents[2] / "shared" / "data" / "pubmed" / "PubMedAbstract_1MB.txt"
REPO = Path(__file__).parents[1]


def _largest(message: str) -> int:
    return int(re.search(r"largest size that fits is (?:about )?([\d,]+)", message).group(1).replace(",", ""))


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_cli_writes_a_model_the_loader_takes(tmp_path, capsys, model_type):
    out = tmp_path / "spm"
    assert main(["--input", str(SAMPLE), "--kind", "sentencepiece", "--vocab-size", "300",
                 "--model-type", model_type, "--output", str(out), "--no-progress"]) == 0
    assert (out / "spm.model").exists() and (out / "spm.vocab").exists()
    printed = capsys.readouterr().out
    assert f"'model_file': '{out}/spm.model'" in printed and f"sentencepiece:{out}/spm.model" in printed
    tok = build_tokenizer({"library": "sentencepiece", "model_file": str(out / "spm.model")})
    assert tok.vocab_size == 300
    assert [tok.inv_vocab[i] for i in range(5)] == list(SPECIAL_TOKENS)
    assert spm.SentencePieceProcessor(model_file=str(out / "spm.model")).id_to_piece(4) == "[MASK]"
    # uncased by default: the model folds case itself
    assert tok.encode("ASPIRIN").ids == tok.encode("aspirin").ids


def test_wordpiece_cli_writes_a_bert_vocab_txt(tmp_path, capsys):
    out = tmp_path / "wp"
    assert main(["--input", str(SAMPLE), "--kind", "wordpiece", "--vocab-size", "500", "--cased",
                 "--min-frequency", "1", "--output", str(out), "--no-progress"]) == 0
    lines = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:5] == list(SPECIAL_TOKENS) and len(lines) == 500
    assert any(t.startswith("##") for t in lines)
    assert "'cased': True" in capsys.readouterr().out
    tok = WordPieceTokenizer(out / "vocab.txt", cased=True)
    assert tok.vocab_size == 500 and tok.encode("Cisplatin").tokens[0][0] == "C"


def test_jsonl_and_gzip_inputs_train_the_same_model_as_plain_text(tmp_path):
    docs = [line for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line]
    jsonl = tmp_path / "corpus.jsonl.gz"
    with gzip.open(jsonl, "wt", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps({"text": doc, "id": 1}) + "\n\n")
    plain = train_sentencepiece([str(SAMPLE)], str(tmp_path / "a"), 300, progress=False)
    packed = train_sentencepiece([str(jsonl)], str(tmp_path / "b"), 300, progress=False)
    assert Path(plain[1]).read_text() == Path(packed[1]).read_text()


def test_documents_longer_than_sentencepiece_limit_are_cut_not_dropped(tmp_path):
    words = SAMPLE.read_text(encoding="utf-8").split()
    parts = list(chunk(" ".join(words * 3)))
    assert len(parts) > 1 and all(len(p) <= MAX_CHUNK_CHARS for p in parts)
    assert " ".join(parts).split() == words * 3
    # one 20 KB line: sentencepiece alone skips it (max_sentence_length) and has nothing to learn
    one_line = tmp_path / "one_line.txt"
    one_line.write_text(" ".join(words * 3) + "\n", encoding="utf-8")
    model = train_sentencepiece([str(one_line)], str(tmp_path / "m"), 300, progress=False)[0]
    assert spm.SentencePieceProcessor(model_file=model).get_piece_size() == 300


def test_too_large_vocab_names_the_largest_size_that_fits(tmp_path, capsys):
    args = ["--input", str(SAMPLE), "--output", str(tmp_path / "v"), "--no-progress"]
    assert main(args + ["--vocab-size", "20000"]) == 2
    err = capsys.readouterr().err
    assert "too small for a vocabulary of 20,000 units" in err and "Traceback" not in err
    largest = _largest(err)
    assert 100 < largest < 20000
    # the suggestion is exact for sentencepiece: that size trains, and --soft-limit writes it
    assert main(args + ["--vocab-size", str(largest)]) == 0
    assert main(args + ["--vocab-size", "20000", "--soft-limit", "--output", str(tmp_path / "s")]) == 0
    assert f"({largest:,} units)" in capsys.readouterr().out


def test_too_large_wordpiece_vocab_suggests_a_size_and_soft_limit_keeps_it(tmp_path, capsys):
    args = ["--input", str(SAMPLE), "--kind", "wordpiece", "--vocab-size", "20000", "--no-progress"]
    assert main(args + ["--output", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "too small for a vocabulary of 20,000 units" in err
    largest = _largest(err)
    assert not (tmp_path / "v" / "vocab.txt").exists()
    assert main(args + ["--soft-limit", "--output", str(tmp_path / "s")]) == 0
    # training is deterministic, so the suggestion is exact: --soft-limit writes that many
    # entries, and asking for that many succeeds with the same file
    soft = (tmp_path / "s" / "vocab.txt").read_bytes()
    assert len(soft.splitlines()) == largest and 100 < largest < 20000
    assert main(args[:4] + ["--vocab-size", str(largest), "--no-progress",
                            "--output", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "vocab.txt").read_bytes() == soft


def test_presets_set_kind_and_size(tmp_path):
    with pytest.raises(VocabularyTooLargeError, match="30,000 units") as err:
        train_sentencepiece([str(SAMPLE)], str(tmp_path), 30_000, progress=False)
    assert err.value.requested == 30_000
    assert main(["--input", str(SAMPLE), "--preset", "pubmed-50k", "--output", str(tmp_path),
                 "--no-progress"]) == 2


def test_vocab_smaller_than_the_alphabet_is_explained(tmp_path, capsys):
    assert main(["--input", str(SAMPLE), "--vocab-size", "20", "--output", str(tmp_path),
                 "--no-progress"]) == 2
    assert "cannot hold the corpus's" in capsys.readouterr().err


@pytest.mark.parametrize("name, content, message", [
    ("bad.txt", b"good line\n\xff\xfe broken\n", "bad.txt:2: invalid UTF-8 (byte 0xff at column 1)"),
    ("bad.jsonl", b'{"text": "a b"}\n\n{"txt": "c"}\n', "bad.jsonl:3: [text] bad JSON line (no 'text' field)"),
    ("bad2.jsonl", b'{"text": "a b"}\n{"text": \n', "bad2.jsonl:2: [text] bad JSON line (invalid JSON"),
    ("bad.txt.gz", gzip.compress(SAMPLE.read_bytes())[:1000], "bad.txt.gz:"),
], ids=["utf8", "jsonl-field", "jsonl-syntax", "truncated-gzip"])
@pytest.mark.parametrize("kind", ["sentencepiece", "wordpiece"])
def test_unreadable_input_names_file_and_line(tmp_path, capsys, name, content, message, kind):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["--input", str(SAMPLE), str(path), "--kind", kind, "--vocab-size", "100",
                 "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "spm.model").exists() and not (tmp_path / "out" / "vocab.txt").exists()
    with pytest.raises(DataFormatError):
        list(iter_documents(str(path)))


def test_missing_input_fails_before_training(tmp_path, capsys):
    assert main(["--input", str(SAMPLE), str(tmp_path / "nope.txt"), "--vocab-size", "100",
                 "--output", str(tmp_path), "--no-progress"]) == 2
    assert "nope.txt' does not exist" in capsys.readouterr().err


def test_command_line_entry_point_and_help():
    result = subprocess.run([sys.executable, "-m", "biomegatron_nemo.tokenizers.train", "--help"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0
    assert "--vocab-size" in result.stdout and "pubmed-30k" in result.stdout


@pytest.mark.skipif(not PUBMED.exists(), reason="shared PubMed sample not present")
def test_pubmed_8k_trains_and_50k_is_refused_with_a_suggestion(tmp_path):
    base = [sys.executable, "-m", "biomegatron_nemo.tokenizers.train", "--input", str(PUBMED),
            "--no-progress"]
    ok = subprocess.run(base + ["--kind", "sentencepiece", "--vocab-size", "8000",
                                "--output", str(tmp_path / "8k")],
                        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert spm.SentencePieceProcessor(model_file=str(tmp_path / "8k" / "spm.model")).get_piece_size() == 8000
    refused = subprocess.run(base + ["--preset", "pubmed-50k", "--output", str(tmp_path / "50k")],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "too small for a vocabulary of 50,000 units" in refused.stderr
    assert 8000 < _largest(refused.stderr) < 50000
