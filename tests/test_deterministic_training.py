"""Vocabulary training is deterministic: the same input and arguments write the same bytes in
fresh processes, whatever the hash seeds, the Rayon thread count or the machine's core count."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from biomegatron_nemo.tokenizers import SPECIAL_TOKENS

REPO = Path(__file__).parents[1]
DEMO_CORPUS = REPO / "biomegatron_nemo" / "samples" / "pubmed_sample.txt"
SAMPLE = Path(__file__).parent / "fixtures" / "tokenizers" / "biomedical_sample.txt"

# Run in a fresh interpreter: Rust's hash maps inside `tokenizers` are seeded per process, which
# is what made the WordPiece trainer's output vary. os.cpu_count is overridden to stand for
# machines with different core counts (sentencepiece's unigram result depends on its threads).
TRAIN = """
import hashlib, json, os, sys
os.cpu_count = lambda: int(os.environ["FAKE_CPU_COUNT"])
from biomegatron_nemo.tokenizers.train import train_sentencepiece, train_wordpiece
kind, out, demo, sample = sys.argv[1:]
if kind == "wordpiece":
    written = (train_wordpiece([demo], out + "/demo", 4000, progress=False)  # examples/demo.py
               + train_wordpiece([sample], out + "/cased", 500, cased=True, min_frequency=1,
                                 progress=False))
else:
    written = (train_sentencepiece([sample], out + "/unigram", 300, progress=False)
               + train_sentencepiece([sample], out + "/bpe", 300, model_type="bpe",
                                     progress=False))
print(json.dumps({os.path.relpath(p, out): hashlib.sha256(open(p, "rb").read()).hexdigest()
                  for p in written}))
"""


def _train_in_fresh_process(kind, out, threads):
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "FAKE_CPU_COUNT": str(threads),
           "PYTHONHASHSEED": str(threads)}
    result = subprocess.run([sys.executable, "-c", TRAIN, kind, str(out), str(DEMO_CORPUS),
                             str(SAMPLE)], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind, files", [("wordpiece", 2), ("sentencepiece", 4)])
def test_two_fresh_processes_write_identical_vocabularies(tmp_path, kind, files):
    # The same output directory both times: spm.model records the path it was written to.
    out = tmp_path / "vocab"
    first = _train_in_fresh_process(kind, out, threads=1)
    shutil.rmtree(out)
    second = _train_in_fresh_process(kind, out, threads=2)
    assert len(first) == files and first == second


def test_deterministic_wordpiece_is_still_a_full_bert_vocabulary(tmp_path):
    from biomegatron_nemo.tokenizers.train import train_wordpiece

    vocab = Path(train_wordpiece([str(DEMO_CORPUS)], str(tmp_path), 4000, progress=False)[0])
    lines = vocab.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(set(lines)) == 4000
    assert lines[:5] == list(SPECIAL_TOKENS)
    # characters, then their continuation forms, then the learned merges
    assert "a" in lines and "##a" in lines and lines.index("a") < lines.index("##a")
    assert sum(len(t.removeprefix("##")) > 1 for t in lines[5:]) > 3500
