"""Length-grouped training batches and length-sorted evaluation: less padding, same examples,
deterministic given the seed and epoch, equal shares over data-parallel ranks."""

import random

import torch

from biomegatron_nemo.data.batching import LengthGroupedSampler, length_grouped_order, length_sorted_order

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


def test_lightning_trains_on_the_grouped_order(tmp_path, megatron_single):
    """Lightning wraps custom training samplers in a *shuffling* distributed sampler; this one is a
    DistributedSampler, which it leaves alone: the batches trained on are the grouped batches."""
    from lightning.pytorch import Callback
    from omegaconf import OmegaConf

    from biomegatron_nemo.models.runs import SAMPLES
    from biomegatron_nemo.models.token_classification import TokenClassificationModel
    from biomegatron_nemo.parallel.trainer import build_trainer
    from biomegatron_nemo.tokenizers.train import train_wordpiece

    vocab = train_wordpiece([str(SAMPLES / "pubmed_sample.txt")], str(tmp_path), 800, soft_limit=True,
                            progress=False)[0]
    seen = []

    class Record(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch["window_index"].tolist())

    trainer = build_trainer({"max_steps": 5, "enable_progress_bar": False, "enable_model_summary": False,
                             "limit_val_batches": 0}, callbacks=[Record()])
    model = TokenClassificationModel(OmegaConf.create({
        "tokenizer": {"vocab_file": vocab}, "encoder": {"preset": "micro"}, "seed": 5,
        "train_ds": {"file": str(SAMPLES / "ner" / "train.tsv"), "batch_size": 8}}), trainer=trainer)
    trainer.fit(model)
    order = length_grouped_order(model._train_dl.dataset.lengths(), 8, seed=5)  # epoch 0
    assert seen == [order[i:i + 8] for i in range(0, 40, 8)]
