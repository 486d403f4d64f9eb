"""Break-rate analysis (Table 4) on a hand-made NER file with hand-counted expectations."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from biomegatron_nemo.analysis.break_rate import (break_rates, load_tokenizer_spec,
                                                  main)
from biomegatron_nemo.data.conll import Sentence, read_conll
from biomegatron_nemo.metrics.ner import entity_spans
from biomegatron_nemo.tokenizers import SPECIAL_TOKENS
from biomegatron_nemo.tokenizers.train import train_sentencepiece

from helpers.pictures import assert_png

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizers"
NER = FIXTURES / "break_rate_ner.tsv"
SHARED = Path(__file__).parents[2] / "shared" / "data"
REPO = Path(__file__).parents[1]

# Enough pieces to count by hand: cisplatin = cis ##platin, aspirins = aspirin ##s, ...
TOY_VOCAB = [*SPECIAL_TOKENS, "aspirin", "induced", "asthma", "in", "patients", "cis", "##platin",
             "nephro", "##toxicity", "-", "renal", "failure", "and", "the", "##s"]


@pytest.fixture
def toy_vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TOY_VOCAB) + "\n", encoding="utf-8")
    return path


def _rows(records, name):
    return {r["entity_type"]: r for r in records if r["tokenizer"] == name}


def test_hand_counted_break_rates(toy_vocab, capsys):
    # Chemical: Aspirin 1, Cisplatin 2, Cisplatin (I- after O opens an entity) 2, aspirins 2
    # Disease:  asthma 1, nephrotoxicity 2, "renal failure" 1+1
    assert main(["--ner", str(NER), "--tokenizer", f"toy=wordpiece:{toy_vocab}", "--json"]) == 0
    rows = _rows(json.loads(capsys.readouterr().out), "toy")
    assert list(rows) == ["Chemical", "Disease", "ALL"]
    chem, dis, total = rows["Chemical"], rows["Disease"], rows["ALL"]
    assert (chem["entities"], chem["split_entities"], chem["entity_subtokens"], chem["entity_words"]) \
        == (4, 3, 7, 4)
    assert (chem["split_pct"], chem["subtokens_per_entity"], chem["subtokens_per_word"]) \
        == (75.0, 1.75, 1.75)
    assert (dis["entities"], dis["split_entities"], dis["entity_subtokens"], dis["entity_words"]) \
        == (3, 2, 5, 4)
    assert (dis["split_pct"], dis["subtokens_per_entity"], dis["subtokens_per_word"]) \
        == (66.67, 1.667, 1.25)
    assert (total["entities"], total["split_entities"], total["split_pct"],
            total["subtokens_per_entity"], total["subtokens_per_word"]) == (7, 5, 71.43, 1.714, 1.5)


def test_cased_spec_keeps_case(toy_vocab):
    # the toy vocabulary is lower-case: cased, "Aspirin" and "Cisplatin" are single [UNK]s
    label, tok = load_tokenizer_spec(f"wordpiece-cased:{toy_vocab.parent}")
    assert label == f"wordpiece-cased:{toy_vocab.parent.name}/vocab.txt"
    chem = break_rates(read_conll(NER), tok, label)[0]
    assert (chem.entity_type, chem.entities, chem.split_entities, chem.entity_subtokens) \
        == ("Chemical", 4, 1, 5)


def test_table_lists_every_tokenizer_and_type(toy_vocab, tmp_path, capsys):
    model = train_sentencepiece([str(FIXTURES / "biomedical_sample.txt")], str(tmp_path / "spm"),
                                300, progress=False)[0]
    assert main(["--ner", str(NER), "--tokenizer", f"wordpiece:{toy_vocab}",
                 "--tokenizer", f"spm=sentencepiece:{model}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{NER}: 4 sentences"
    assert out[1].split("  ")[0] == "tokenizer" and "sub-tokens/word" in out[1]
    body = [line.split() for line in out[3:]]
    assert [(r[0], r[1]) for r in body] == [
        (f"wordpiece:{tmp_path.name}/vocab.txt", "Chemical"),
        (f"wordpiece:{tmp_path.name}/vocab.txt", "Disease"),
        (f"wordpiece:{tmp_path.name}/vocab.txt", "ALL"),
        ("spm", "Chemical"), ("spm", "Disease"), ("spm", "ALL")]
    assert body[0][2:] == ["4", "75.0", "1.75", "1.75"]


def test_sentencepiece_counts_match_encode_words(tmp_path):
    model = train_sentencepiece([str(FIXTURES / "biomedical_sample.txt")], str(tmp_path), 300,
                                progress=False)[0]
    _, tok = load_tokenizer_spec(f"sentencepiece:{model}")
    sentences = read_conll(NER)
    expected = sum(len(tok.encode_words([w]).ids) for s in sentences
                   for w, t in zip(s.words, s.tags) if t != "O")
    assert break_rates(sentences, tok)[-1].entity_subtokens == expected


def test_iobes_files_give_the_same_counts(toy_vocab, tmp_path, capsys):
    iobes = {"B-Chemical\n-": "S-Chemical\n-", "renal\tB-Disease": "renal\tB-Disease",
             "failure\tI-Disease": "failure\tE-Disease"}
    text = NER.read_text(encoding="utf-8")
    for old, new in iobes.items():
        text = text.replace(old, new)
    path = tmp_path / "iobes.tsv"
    path.write_text(text, encoding="utf-8")
    args = ["--tokenizer", f"toy=wordpiece:{toy_vocab}", "--json"]
    assert main(["--ner", str(path), "--scheme", "IOBES"] + args) == 0
    iobes_rows = json.loads(capsys.readouterr().out)
    assert main(["--ner", str(NER)] + args) == 0
    assert iobes_rows == json.loads(capsys.readouterr().out)
    assert main(["--ner", str(path)] + args) == 2  # E-/S- tags are not IOB2
    assert f"{path}:1:" in capsys.readouterr().err


def test_entities_follow_conlleval_chunks():
    # I-A after O starts an entity; B-A and I-B split; untyped B / I count as "entity"
    sentences = [Sentence(["w"] * 6, ["B-A", "I-A", "O", "I-A", "B-A", "I-B"]), Sentence(["w"] * 3, ["B", "I", "O"])]
    spans = [[(t, s, e + 1) for t, s, e in entity_spans(x.tags)] for x in sentences]
    assert spans == [[("A", 0, 2), ("A", 3, 4), ("A", 4, 5), ("B", 5, 6)], [("_", 0, 2)]]


@pytest.mark.parametrize("args, message", [
    (["--tokenizer", "bpe:vocab.txt"], "expected [LABEL=]KIND:PATH"),
    (["--tokenizer", "wordpiece:/no/vocab.txt"], "file '/no/vocab.txt' does not exist"),
])
def test_bad_tokenizer_spec_is_explained(args, message, capsys):
    assert main(["--ner", str(NER)] + args) == 2
    assert message in capsys.readouterr().err


def test_bad_ner_file_names_file_and_line(toy_vocab, tmp_path, capsys):
    assert main(["--ner", str(tmp_path / "none.tsv"), "--tokenizer", f"wordpiece:{toy_vocab}"]) == 2
    assert "none.tsv' does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text("Aspirin\tB-Chemical\ninduced\tX-Y\n", encoding="utf-8")
    assert main(["--ner", str(bad), "--tokenizer", f"wordpiece:{toy_vocab}"]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err


@pytest.mark.skipif(not all((SHARED / p).exists() for p in (
    "ner/BC5CDR/train.tsv", "vocab/bert-base-uncased-vocab.txt", "pubmed/PubMedAbstract_1MB.txt")),
    reason="shared BC5CDR / BERT vocab / PubMed sample not present")
def test_command_runs_on_bc5cdr_with_bert_uncased_and_a_pubmed_vocab(tmp_path):
    pubmed = train_sentencepiece([str(SHARED / "pubmed" / "PubMedAbstract_1MB.txt")],
                                 str(tmp_path), 8000, progress=False)[0]
    result = subprocess.run(
        [sys.executable, "-m", "biomegatron_nemo.analysis.break_rate",
         "--ner", str(SHARED / "ner" / "BC5CDR" / "train.tsv"),
         "--tokenizer", f"bert=wordpiece:{SHARED / 'vocab' / 'bert-base-uncased-vocab.txt'}",
         "--tokenizer", f"pubmed=sentencepiece:{pubmed}", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    bert, pubmed = _rows(records, "bert"), _rows(records, "pubmed")
    # BC5CDR train: 5,203 chemical and 4,182 disease mentions
    assert (bert["Chemical"]["entities"], bert["Disease"]["entities"]) == (5203, 4182)
    assert pubmed["ALL"]["entities"] == 9385
    # even 8k units learned on 1 MB of PubMed split fewer entities than BERT's 30k general ones
    assert 50 < pubmed["ALL"]["split_pct"] < bert["ALL"]["split_pct"] < 100
    assert pubmed["ALL"]["subtokens_per_word"] < bert["ALL"]["subtokens_per_word"]


def test_plot_draws_table_4_and_leaves_the_table_alone(toy_vocab, tmp_path, capsys):
    args = ["--ner", str(NER), "--tokenizer", f"toy=wordpiece:{toy_vocab}",
            "--tokenizer", f"cased=wordpiece-cased:{toy_vocab}"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    picture = tmp_path / "break_rate.png"
    assert main(args + ["--plot", str(picture)]) == 0
    captured = capsys.readouterr()
    assert captured.out == plain and captured.err.strip() == f"plot: {picture}"
    assert_png(picture)
    assert main(args + ["--plot", str(tmp_path / "break_rate.tsv")]) == 2  # not a picture format
    assert "--plot" in capsys.readouterr().err
