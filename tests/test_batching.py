"""Length-grouped and token-budget training batches and length-sorted evaluation: less padding,
same examples, deterministic given the seed and epoch, equal shares over data-parallel ranks."""

import random

import torch

import pytest

from biomegatron_nemo.data.batching import (LengthGroupedSampler, TokenBudgetSampler, length_grouped_order,
                                             length_sorted_order, token_budget_batches)

_RNG = random.Random(0)
LENGTHS = [_RNG.choice([5, 8, 12, 20, 40, 90, 125]) + i % 3 for i in range(1000)]


def padded_tokens(order, batch_size):
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(len(b) * max(LENGTHS[i] for i in b) for b in batches)


def test_grouped_order_is_a_permutation_with_far_less_padding():
    order = length_grouped_order(LENGTHS, 32, seed=1)
    assert sorted(order) == list(range(len(LENGTHS)))
    shuffled = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(1)).tolist()
    real = sum(LENGTHS)
    assert padded_tokens(order, 32) < 1.1 * real and padded_tokens(shuffled, 32) > 2 * real
    first = order[:32]
    assert max(LENGTHS[i] for i in first) == max(LENGTHS)  # the longest batch first


def test_order_depends_on_seed_and_epoch_only():
    a, b = LengthGroupedSampler(LENGTHS, 32, seed=7), LengthGroupedSampler(LENGTHS, 32, seed=7)
    assert list(a) == list(b)
    second = list(a)  # without set_epoch each iteration is the next epoch
    assert second != list(LengthGroupedSampler(LENGTHS, 32, seed=7)) and sorted(second) == sorted(list(b))
    c = LengthGroupedSampler(LENGTHS, 32, seed=7)
    c.set_epoch(1)
    assert list(c) == second


def test_data_parallel_ranks_take_equal_shares_of_one_order():
    order = length_grouped_order(LENGTHS, 32, seed=3)  # grouped by the global batch: 2 ranks x 16
    shares = [list(LengthGroupedSampler(LENGTHS, 16, seed=3, num_replicas=2, rank=rank)) for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == 500 and sorted(shares[0] + shares[1]) == sorted(order)
    # each rank's batches still group similar lengths
    for share in shares:
        assert padded_tokens(share, 16) < 1.2 * sum(LENGTHS[i] for i in share)


def test_evaluation_order_is_longest_first():
    order = length_sorted_order(LENGTHS)
    assert sorted(order) == list(range(len(LENGTHS)))
    assert [LENGTHS[i] for i in order] == sorted(LENGTHS, reverse=True)


def budget_violations(batches, max_tokens, max_examples):
    return [b for b in batches if len(b) * max(LENGTHS[i] for i in b) > max_tokens or len(b) > max_examples]


def test_token_budget_batches_fill_the_budget_and_keep_every_example():
    batches = token_budget_batches(LENGTHS, max_tokens=1024, max_examples=128)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert not budget_violations(batches, 1024, 128)
    # greedy: adding the next example (in length order) to any batch would break the budget
    for batch, following in zip(batches, batches[1:]):
        assert (len(batch) + 1) * LENGTHS[batch[0]] > 1024 or len(batch) == 128
        assert LENGTHS[batch[-1]] >= LENGTHS[following[0]]
    sizes = {LENGTHS[b[0]]: len(b) for b in batches}  # examples a batch, by its longest
    assert sizes[127] == 1024 // 127 and sizes[20] == 1024 // 20 and sizes[7] == 128  # the cap on examples
    real = sum(LENGTHS)
    assert sum(len(b) * LENGTHS[b[0]] for b in batches) < 1.05 * real


def test_an_example_over_the_budget_is_a_batch_of_its_own():
    assert token_budget_batches([3, 10, 2, 2], max_tokens=6, max_examples=8) == [[1], [0, 2], [3]]
    with pytest.raises(ValueError, match="max_tokens and max_examples must be >= 1"):
        token_budget_batches([3], max_tokens=0, max_examples=8)


def test_token_budget_epochs_draw_new_batches_of_the_same_count():
    sampler = TokenBudgetSampler(LENGTHS, max_tokens=1024, max_examples=64, seed=7)
    first, second = list(sampler), list(sampler)  # without set_epoch each iteration is the next epoch
    assert len(first) == len(second) == len(sampler) and first != second
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(len(LENGTHS)))
        assert not budget_violations(epoch, 1024, 64)
        assert LENGTHS[epoch[0][0]] == max(LENGTHS)  # the longest batch first
    again = TokenBudgetSampler(LENGTHS, max_tokens=1024, max_examples=64, seed=7)
    again.set_epoch(1)
    assert list(again) == second


def test_token_budget_ranks_take_equal_steps_of_similar_lengths():
    world = 5  # 48 batches: the last step is filled by repeating batches
    whole = TokenBudgetSampler(LENGTHS, max_tokens=1024, max_examples=64, seed=3)
    shares = [list(TokenBudgetSampler(LENGTHS, max_tokens=1024, max_examples=64, seed=3, num_replicas=world,
                                      rank=r)) for r in range(world)]
    assert len(whole) == 48 and all(len(share) == 10 for share in shares)
    covered = {i for share in shares for b in share for i in b}
    assert covered == set(range(len(LENGTHS)))  # padding repeats batches, never drops any
    # the ranks of one step hold consecutive batches of the epoch's sorted cut (similar lengths)
    cut = token_budget_batches(LENGTHS, 1024, 64, torch.Generator().manual_seed(3))  # epoch 0, as drawn
    groups = [cut[i:i + world] for i in range(0, len(cut), world)]
    steps = [list(step) for step in zip(*shares)]
    assert all(step in groups for step in steps[:-1])
    assert steps[-1][:3] == groups[-1] and steps[-1][3:] == steps[0][:2]  # the short group, then repeats


def _batches_lightning_trains_on(tmp_path, train_ds):
    """The window indices of each batch of 5 training steps, and the model."""
    from lightning.pytorch import Callback
    from omegaconf import OmegaConf

    from biomegatron_nemo.runs.schemas import SAMPLES
    from biomegatron_nemo.models.token_classification import TokenClassificationModel
    from biomegatron_nemo.parallel.trainer import build_trainer
    from biomegatron_nemo.tokenizers.train import train_wordpiece

    vocab = train_wordpiece([str(SAMPLES / "pubmed_sample.txt")], str(tmp_path), 800, soft_limit=True,
                            progress=False)[0]
    seen = []

    class Record(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((batch["window_index"].tolist(), tuple(batch["input_ids"].shape)))

    trainer = build_trainer({"max_steps": 5, "enable_progress_bar": False, "enable_model_summary": False,
                             "limit_val_batches": 0}, callbacks=[Record()])
    model = TokenClassificationModel(OmegaConf.create({
        "tokenizer": {"vocab_file": vocab}, "encoder": {"preset": "micro"}, "seed": 5,
        "train_ds": {"file": str(SAMPLES / "ner" / "train.tsv"), **train_ds}}), trainer=trainer)
    trainer.fit(model)
    return seen, model


def test_lightning_trains_on_the_grouped_order(tmp_path, megatron_single):
    """Lightning wraps custom training samplers in a *shuffling* distributed sampler; this one is a
    DistributedSampler, which it leaves alone: the batches trained on are the grouped batches."""
    seen, model = _batches_lightning_trains_on(tmp_path, {"batch_size": 8})
    order = length_grouped_order(model._train_dl.dataset.lengths(), 8, seed=5)  # epoch 0
    assert [windows for windows, _ in seen] == [order[i:i + 8] for i in range(0, 40, 8)]


def test_lightning_trains_on_token_budget_batches(tmp_path, megatron_single):
    """With max_tokens each step is one sampler batch, padded to its own longest window only."""
    seen, model = _batches_lightning_trains_on(tmp_path, {"batch_size": 64, "max_tokens": 256})
    lengths = model._train_dl.dataset.lengths()
    expected = TokenBudgetSampler(lengths, max_tokens=256, max_examples=64, seed=5)
    expected.set_epoch(0)
    assert [windows for windows, _ in seen] == list(expected)[:5]
    for windows, (rows, width) in seen:
        assert rows == len(windows) and width == max(lengths[i] for i in windows) and rows * width <= 256
    assert len({rows for _, (rows, _) in seen}) > 1  # batches of several sizes
