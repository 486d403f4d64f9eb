"""Fine-tuning resumed mid-epoch continues with exactly the next batch: a NER run stopped at a
step inside its first epoch and resumed from that checkpoint makes the same losses, step for step,
as one uninterrupted run, with batches of a fixed count or of a token budget, and with random batches
computed packed (``encoder.packed_sequences``). The loader's place in the epoch is in the checkpoint;
dropout is seeded by the step."""

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import OmegaConf

from biomegatron_nemo.data.batching import (BatchedExamples, ClassBalancedSampler, LengthGroupedSampler,
                                             ShuffledSampler, TokenBudgetSampler, already_collated)
from biomegatron_nemo.data.resumable import ResumableDataLoader
from biomegatron_nemo.models.token_classification import TokenClassificationModel
from biomegatron_nemo.parallel.trainer import build_trainer
from biomegatron_nemo.tokenizers.train import train_wordpiece

from _data_paths import SAMPLES

STEPS, STOP = 20, 9  # 220 sample sentences in batches of 16: 14 a epoch, so the stop is mid-epoch


class RecordLosses(Callback):
    """Each step's loss; with ``stop_at``, the run ends after that step (as a killed job would,
    its schedule still planned for the whole run)."""

    def __init__(self, stop_at=None):
        self.losses, self.stop_at = {}, stop_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # the loss, and the step bookkeeping a logger and val_check_interval count with
        self.losses[trainer.global_step] = (float(outputs["loss"]), batch_idx,
                                            trainer.fit_loop.epoch_loop._batches_that_stepped)
        self.batches_per_epoch = trainer.num_training_batches
        if trainer.global_step == self.stop_at:
            trainer.should_stop = True


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    lines = [line.split("\t")[0] for line in (SAMPLES / "ner" / "train.tsv").read_text().splitlines() if line]
    (d / "text.txt").write_text(" ".join(lines) + "\n")
    vocab = train_wordpiece([str(d / "text.txt")], str(d), vocab_size=600, soft_limit=True, progress=False)[0]
    return OmegaConf.create({"tokenizer": {"vocab_file": vocab}, "encoder": {"preset": "micro", "layer_spec": "portable"},
                             "train_ds": {"file": str(SAMPLES / "ner" / "train.tsv"), "batch_size": 16},
                             "optim": {"lr": 3e-3, "weight_decay": 0.01, "sched": {"warmup_ratio": 0.1}}})


def _run(cfg, ckpt_dir=None, resume=None, stop_at=None, epoch_length=None):
    record = RecordLosses(stop_at)
    callbacks = [record]
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=str(ckpt_dir), every_n_train_steps=STOP, save_top_k=-1))
    trainer = build_trainer({"max_steps": STEPS, "enable_progress_bar": False, "enable_model_summary": False,
                             "enable_checkpointing": ckpt_dir is not None, "callbacks": callbacks})
    model = TokenClassificationModel(cfg, trainer=trainer)
    trainer.fit(model, ckpt_path=resume)
    if epoch_length is not None:
        epoch_length.append(record.batches_per_epoch)
    return record.losses


@pytest.mark.parametrize("change", [{}, {"train_ds": {"batch_size": 64, "max_tokens": 300}},
                                    {"train_ds": {"group_by_length": False}, "encoder": {"packed_sequences": True}}],
                         ids=["batch-size", "max-tokens", "random-packed"])
def test_a_run_resumed_mid_epoch_repeats_the_uninterrupted_losses(config, tmp_path, change):
    config = OmegaConf.merge(config, change)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    epoch_length = []
    try:
        whole = _run(config, epoch_length=epoch_length)
        _run(config, ckpt_dir=tmp_path, stop_at=STOP)
        (checkpoint,) = tmp_path.glob("*.ckpt")
        resumed = _run(config, resume=str(checkpoint))
    finally:
        torch.set_num_threads(threads)
    assert STOP + 1 < epoch_length[0] < STEPS  # stopped mid-epoch; resumed across the epoch boundary
    assert sorted(resumed) == list(range(STOP + 1, STEPS + 1))
    for step in resumed:
        assert resumed[step][0] == pytest.approx(whole[step][0], abs=1e-6), f"step {step}"
        assert resumed[step][1:] == whole[step][1:], f"step {step}: batch index and logged step"


class Recording(torch.utils.data.Dataset):
    """Ten examples, 0 to 9, recording which ones are loaded."""

    def __init__(self):
        self.loaded = []

    def __len__(self):
        return 10

    def __getitem__(self, i):
        self.loaded.append(i)
        return i

    def collate_fn(self, items):
        return torch.tensor(items)


LENGTHS = [1, 3, 2, 5, 4, 1, 2, 6, 3, 1]
LOADERS = {
    "length-grouped": lambda data: ResumableDataLoader(data, batch_size=2,
                                                       sampler=LengthGroupedSampler(LENGTHS, batch_size=2, seed=0)),
    "shuffled": lambda data: ResumableDataLoader(data, batch_size=2, sampler=ShuffledSampler(10, seed=0)),
    "class-balanced": lambda data: ResumableDataLoader(
        data, batch_size=2, sampler=ClassBalancedSampler([0, 0, 0, 0, 0, 0, 1, 1, 2, 2], seed=0)),
    # a sampler item is a whole batch: the resumed epoch skips that many batches
    "token-budget": lambda data: ResumableDataLoader(
        BatchedExamples(data), batch_size=None, collate_fn=already_collated,
        sampler=TokenBudgetSampler(LENGTHS, max_tokens=6, max_examples=4, seed=0)),
}


@pytest.mark.parametrize("make_loader", LOADERS.values(), ids=LOADERS.keys())
def test_the_loader_state_skips_batches_without_loading_them(make_loader):
    """Every training order (group_by_length, plain shuffling, RE's oversampling, max_tokens)
    resumes mid-epoch at the next batch, loading nothing for the batches it skips."""
    data = Recording()
    loader = make_loader(data)
    loader.sampler.set_epoch(0)
    first = [b.tolist() for b in loader]
    assert len(first) == len(loader) > 2
    loader.sampler.set_epoch(0)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches": 2}
    again = make_loader(data)
    again.load_state_dict(state)
    again.sampler.set_epoch(0)
    data.loaded.clear()
    rest = [b.tolist() for b in again]
    assert rest == first[2:] and sorted(data.loaded) == sorted(i for b in first[2:] for i in b)
