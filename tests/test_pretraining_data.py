"""Masked-LM datasets (megatron-core's BERT dataset) and the pretraining batch contract."""

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from biomegatron_nemo.data.preprocess import preprocess_corpus
from biomegatron_nemo.data.pretraining import (
    PretrainingCollator,
    build_pretraining_dataloader,
    build_pretraining_datasets,
    corpus_token_count,
)
from biomegatron_nemo.tokenizers import WordPieceTokenizer

ROOT = Path(__file__).parents[1]
SAMPLE = ROOT / "biomegatron_nemo" / "samples" / "pubmed_sample.txt"
VOCAB = ROOT / "tests" / "fixtures" / "pretraining" / "sample_vocab.txt"
N = 400  # samples inspected per statistical test: ~7,000 masked positions


@pytest.fixture(scope="module")
def process_group():
    """A one-process gloo group (megatron-core builds its indices on rank 0 behind a barrier)."""
    if dist.is_initialized():  # left by another module: use it, leave it
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer(str(VOCAB))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, tokenizer):
    """The sample corpus preprocessed whole, and as two halves (for blends)."""
    root = tmp_path_factory.mktemp("corpora")
    lines = SAMPLE.read_text().splitlines()
    (root / "first.txt").write_text("\n".join(lines[:70]))
    (root / "second.txt").write_text("\n".join(lines[70:]))
    for name, path in [("all", SAMPLE), ("first", root / "first.txt"),
                       ("second", root / "second.txt")]:
        preprocess_corpus([path], root / name, tokenizer, min_sentences=2, progress=False)
    return root


def config(corpora, tmp_path, **overrides):
    cfg = {"data_prefix": str(corpora / "all"), "split": "90,5,5", "seq_length": 64,
           "seed": 1234, "path_to_cache": str(tmp_path / "cache")}
    cfg.update(overrides)
    return cfg


def batches(dataset, tokenizer, n=N, size=50):
    collate = PretrainingCollator(tokenizer.pad_id, tokenizer.sep_id)
    return [collate([dataset[i] for i in range(start, min(start + size, n))])
            for start in range(0, n, size)]


def cat(batch_list, key):
    return torch.cat([b[key] for b in batch_list])


def originals(batch):
    """Token ids before masking: the label where a token was selected, else the input."""
    return torch.where(batch["loss_mask"].bool(), batch["lm_labels"], batch["input_ids"])


def test_batch_contract(process_group, corpora, tmp_path, tokenizer):
    train, valid, test = build_pretraining_datasets(config(corpora, tmp_path), tokenizer,
                                                    (200, 20, 20))
    assert len(train) >= 200 and len(valid) >= 20 and len(test) >= 20
    batch = batches(train, tokenizer, n=16, size=16)[0]
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "lm_labels",
                          "loss_mask", "sentence_order_labels"}
    for key in ("input_ids", "token_type_ids", "attention_mask", "lm_labels"):
        assert batch[key].shape == (16, 64) and batch[key].dtype == torch.long
    assert batch["loss_mask"].dtype == torch.float32
    assert batch["sentence_order_labels"].shape == (16,)
    ids, attention = batch["input_ids"], batch["attention_mask"]
    assert (ids[:, 0] == tokenizer.cls_id).all()
    lengths = attention.sum(1)
    for row, length in enumerate(lengths.tolist()):
        assert attention[row, :length].all() and not attention[row, length:].any()
        assert ids[row, length - 1] == tokenizer.sep_id  # real tokens end with [SEP]
        assert (ids[row, length:] == tokenizer.pad_id).all()
        types = batch["token_type_ids"][row, :length].tolist()
        assert types == sorted(types) and types[0] == 0  # segment A, then segment B
    assert (lengths < 64).any()  # some samples are padded (short_seq_prob)
    assert (batch["token_type_ids"][attention == 0] == 0).all()
    selected = batch["loss_mask"].bool()
    assert (batch["lm_labels"][~selected] == -100).all()
    assert (batch["lm_labels"][selected] >= 0).all() and not (selected & (attention == 0)).any()


def test_masking_rate_and_80_10_10(process_group, corpora, tmp_path, tokenizer):
    cfg = config(corpora, tmp_path, whole_word_masking=False, max_ngram=1)
    train = build_pretraining_datasets(cfg, tokenizer, (N, 0, 0))[0]
    got = batches(train, tokenizer)
    selected = cat(got, "loss_mask").bool()
    real = cat(got, "attention_mask").bool()
    rate = selected.sum().item() / real.sum().item()
    assert 0.14 < rate < 0.16, rate  # round(0.15 * length) per sample
    inputs = cat(got, "input_ids")[selected]
    labels = cat(got, "lm_labels")[selected]
    n = selected.sum().item()
    as_mask = (inputs == tokenizer.mask_id).sum().item() / n
    unchanged = (inputs == labels).sum().item() / n
    random = 1.0 - as_mask - unchanged
    assert abs(as_mask - 0.8) < 0.02 and abs(unchanged - 0.1) < 0.02 and abs(random - 0.1) < 0.02, (
        as_mask, unchanged, random)


def _split_words(batch_list, tokenizer):
    """Count words (a head token plus ## continuations) partly selected for prediction."""
    partial = whole = 0
    boundary = {tokenizer.cls_id, tokenizer.sep_id}
    for batch in batch_list:
        orig = originals(batch)
        selected = batch["loss_mask"].bool()
        continuation = torch.tensor([[tokenizer.is_continuation(int(t)) for t in row] for row in orig])
        # i+1 continues the word of i (megatron-core never starts a word at [CLS]/[SEP]).
        same_word = continuation[:, 1:] & ~torch.isin(orig[:, :-1], torch.tensor(sorted(boundary)))
        differs = selected[:, 1:] != selected[:, :-1]
        partial += int((same_word & differs).sum())
        whole += int((same_word & selected[:, 1:] & selected[:, :-1]).sum())
    return partial, whole


def test_whole_word_masking_never_masks_part_of_a_word(process_group, corpora, tmp_path, tokenizer):
    cfg = config(corpora, tmp_path, whole_word_masking=True)
    partial, whole = _split_words(batches(build_pretraining_datasets(cfg, tokenizer, (N, 0, 0))[0],
                                          tokenizer), tokenizer)
    assert partial == 0 and whole > 100
    # The check detects the difference: sub-token masking does split words.
    cfg = config(corpora, tmp_path, whole_word_masking=False, max_ngram=1)
    partial, _ = _split_words(batches(build_pretraining_datasets(cfg, tokenizer, (N, 0, 0))[0],
                                      tokenizer), tokenizer)
    assert partial > 100


def test_labels_are_the_original_tokens(process_group, corpora, tmp_path, tokenizer):
    # Without the binary head and truncation a sample is [CLS] + its sentences + [SEP]; compare
    # labels and unmasked inputs with the preprocessed sentences read straight from disk.
    cfg = config(corpora, tmp_path, binary_head=False, seq_length=128)
    train = build_pretraining_datasets(cfg, tokenizer, (N, 0, 0))[0]
    collate = PretrainingCollator(tokenizer.pad_id, tokenizer.sep_id)
    checked = 0
    for idx in range(N):
        sample = train[idx]
        if sample["truncated"]:
            continue
        beg, end, _ = train.sample_index[idx]
        expected = [tokenizer.cls_id, *np.concatenate([train.dataset[i] for i in range(beg, end)]),
                    tokenizer.sep_id]
        batch = collate([sample])
        length = int(batch["attention_mask"].sum())
        assert length == len(expected)
        assert originals(batch)[0, :length].tolist() == [int(t) for t in expected]
        checked += 1
    assert checked > 100  # ~1/3 of samples are untruncated at this length


def test_deterministic_for_a_seed(process_group, corpora, tmp_path, tokenizer):
    def first_batch(seed, cache):
        cfg = config(corpora, tmp_path / cache, seed=seed)
        return batches(build_pretraining_datasets(cfg, tokenizer, (64, 0, 0))[0], tokenizer, n=64,
                       size=64)[0]

    one, again, other = first_batch(7, "a"), first_batch(7, "b"), first_batch(8, "c")
    for key in one:
        assert torch.equal(one[key], again[key]), key
    assert not torch.equal(one["input_ids"], other["input_ids"])


def test_sentence_order_targets(process_group, corpora, tmp_path, tokenizer):
    on = batches(build_pretraining_datasets(config(corpora, tmp_path, binary_head=True),
                                            tokenizer, (N, 0, 0))[0], tokenizer)
    swapped = cat(on, "sentence_order_labels").float().mean().item()
    assert 0.42 < swapped < 0.58
    assert all((b["token_type_ids"].max(1).values == 1).all() for b in on)  # always two segments
    off = batches(build_pretraining_datasets(config(corpora, tmp_path, binary_head=False),
                                             tokenizer, (N, 0, 0))[0], tokenizer)
    assert cat(off, "sentence_order_labels").sum() == 0


def test_one_split_alone_equals_that_split_built_with_the_others(process_group, corpora, tmp_path,
                                                                 tokenizer):
    cfg = config(corpora, tmp_path)
    together = build_pretraining_datasets(cfg, tokenizer, (100, 20, 20))
    alone = build_pretraining_datasets(cfg, tokenizer, (0, 20, 0))
    assert alone[0] is None and alone[2] is None
    assert np.array_equal(together[1].indices, alone[1].indices)
    assert not set(together[1].indices) & set(together[0].indices)  # disjoint documents
    for i in range(20):
        assert np.array_equal(together[1][i]["text"], alone[1][i]["text"])


def test_blend_of_two_corpora_follows_the_weights(process_group, corpora, tmp_path, tokenizer):
    cfg = config(corpora, tmp_path, data_prefix=[0.25, str(corpora / "first"),
                                                 0.75, str(corpora / "second")])
    train, valid, _ = build_pretraining_datasets(cfg, tokenizer, (2000, 100, 0))
    assert len(train) == 2000 and len(valid) == 100
    share_first = float(np.mean(np.asarray(train.dataset_index) == 0))
    assert abs(share_first - 0.25) < 0.01
    firsts = [train.dataset_sample_index[i] for i in range(50) if train.dataset_index[i] == 0]
    assert firsts and train.datasets[0].dataset.path_prefix.endswith("first")
    with pytest.raises(ValueError, match="every split needs a number of samples"):
        build_pretraining_datasets(cfg, tokenizer, (2000, None, 0))


def test_dataloader_for_a_split(process_group, corpora, tmp_path, tokenizer):
    from omegaconf import OmegaConf

    data = OmegaConf.create(config(corpora, tmp_path))
    # training: the caller's default count (a model passes max_steps x global batch)
    loader = build_pretraining_dataloader(data, OmegaConf.create({"micro_batch_size": 4}), "train", tokenizer,
                                          num_samples=5 * 4 * 2)
    assert len(loader.dataset) >= 5 * 4 * 2
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (4, 64) and loader.drop_last
    valid = build_pretraining_dataloader(data, {"micro_batch_size": 4, "num_samples": 12}, "validation", tokenizer)
    assert len(valid.dataset) >= 12 and not valid.drop_last
    with pytest.raises(ValueError, match="gives the test split no documents"):
        build_pretraining_dataloader({**config(corpora, tmp_path), "split": "100,0,0"}, {"num_samples": 4},
                                     "test", tokenizer)
    with pytest.raises(ValueError, match="the validation split needs num_samples"):
        build_pretraining_dataloader(data, {}, "validation", tokenizer)
    with pytest.raises(ValueError, match=r"validation data: micro_batch_siz: unknown key; did you mean micro_batch_size\?"):
        build_pretraining_dataloader(data, {"micro_batch_siz": 4, "num_samples": 4}, "validation", tokenizer)
    with pytest.raises(ValueError, match=r"pretraining data: masked_lm_prob: must be in \(0, 1\)"):
        build_pretraining_dataloader({**config(corpora, tmp_path), "masked_lm_prob": 1.5}, {"num_samples": 4},
                                     "validation", tokenizer)


@pytest.mark.slow
def test_clear_errors(process_group, corpora, tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match=r"missing\.bin.*preprocess"):
        build_pretraining_datasets(config(corpora, tmp_path, data_prefix=str(tmp_path / "missing")),
                                   tokenizer, (10, 0, 0))
    with pytest.raises(ValueError, match=r"gives the validation split of .*all' no documents"):
        build_pretraining_datasets(config(corpora, tmp_path, split="998,1,1"), tokenizer,
                                   (10, 5, 0))
    single = tmp_path / "single.txt"  # one-sentence documents: nothing for the binary head
    single.write_text("All mice survived.\nResults were similar.\nToxicity was rare.\n")
    preprocess_corpus([single], tmp_path / "single", tokenizer, progress=False)
    with pytest.raises(ValueError, match=r"yields no samples: it needs documents with 2 sentences"):
        build_pretraining_datasets(config(corpora, tmp_path, data_prefix=str(tmp_path / "single"),
                                          split="1,0,0", binary_head=True), tokenizer, (10, 0, 0))
    with pytest.raises(ValueError, match="weights must be positive"):
        build_pretraining_datasets(config(corpora, tmp_path, data_prefix=[
            0, str(corpora / "first"), 1, str(corpora / "second")]), tokenizer, (10, 0, 0))


def test_unweighted_prefixes_blend_by_token_count(process_group, corpora, tmp_path, tokenizer):
    tokens = [corpus_token_count(str(corpora / n)) for n in ("first", "second")]
    two = config(corpora, tmp_path, data_prefix=[str(corpora / "first"), str(corpora / "second")])
    train = build_pretraining_datasets(two, tokenizer, (2000, 0, 0))[0]
    share_first = float(np.mean(np.asarray(train.dataset_index) == 0))
    assert abs(share_first - tokens[0] / sum(tokens)) < 0.01
