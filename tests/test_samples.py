"""The shipped SAMPLE files parse with every reader, match their README, and are reproducible."""

import filecmp

import biomegatron_nemo.samples.generate_samples as gen
from biomegatron_nemo.data.chemprot import read_chemprot
from biomegatron_nemo.data.conll import read_conll
from biomegatron_nemo.data.squad import question_id, read_squad
from biomegatron_nemo.metrics.ner import ner_scores

from _data_paths import SAMPLES

FILES = ["ner/train.tsv", "ner/dev.tsv", "chemprot/train.tsv", "chemprot/dev.tsv", "qa/train.json", "qa/dev.json"]


def test_samples_parse_with_the_counts_in_their_readme():
    for split, n, chem, dis in (("train", 220, 246, 241), ("dev", 55, 58, 56)):
        tags = [s.tags for s in read_conll(SAMPLES / "ner" / f"{split}.tsv")]
        per_type = ner_scores(tags, tags)["per_type"]
        assert (len(tags), per_type["Chemical"]["gold"], per_type["Disease"]["gold"]) == (n, chem, dis)
    assert [len(read_chemprot(SAMPLES / "chemprot" / f"{s}.tsv")) for s in ("train", "dev")] == [74, 26]
    for split, n in (("train", 60), ("dev", 20)):
        ex = read_squad(SAMPLES / "qa" / f"{split}.json", require_answers=True)
        assert len(ex) == n and len({question_id(e.id) for e in ex}) == n // 2


def test_dev_entities_mostly_seen_in_train():
    def first_words(split):
        return {w.lower() for s in read_conll(SAMPLES / "ner" / f"{split}.tsv")
                for w, t in zip(s.words, s.tags) if t.startswith("B-")}
    dev, train = first_words("dev"), first_words("train")
    assert len(dev & train) / len(dev) > 0.8


def test_generator_reproduces_the_shipped_files(tmp_path):
    gen.main(tmp_path)
    for name in FILES:
        assert filecmp.cmp(tmp_path / name, SAMPLES / name, shallow=False), name
