"""``BioMegatronPretrainingModel``: masked-LM (+ optional sentence-order) pretraining.

Batches follow the contract of :mod:`biomegatron_nemo.data.pretraining` (``input_ids``,
``token_type_ids``, ``attention_mask``, ``lm_labels``, ``loss_mask`` and, with the binary
head, ``sentence_order_labels``). Logged: MLM loss and perplexity, binary-head loss and
accuracy, learning rate, tokens/s. Tensor, pipeline and data parallel per the strategy.
"""

from __future__ import annotations

import time
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from omegaconf import DictConfig

from biomegatron_nemo.encoder.heads import MaskedLMHead, SentenceOrderHead
from biomegatron_nemo.models.base import BioMegatronModelPT


class BioMegatronPretrainingModel(BioMegatronModelPT):
    """Megatron-BERT pretraining on megatron-core's BERT masked dataset."""

    ties_output_to_embeddings = True

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        self._step_started: Optional[float] = None
        super().__init__(cfg=cfg, trainer=trainer)

    def build_heads(self) -> None:
        if not self.encoder.post_process:
            return
        own_weight = not self.encoder.pre_process  # last pipeline stage keeps a tied copy
        self.mlm_head = MaskedLMHead(self.encoder.config, self.encoder.padded_vocab_size,
                                     self.encoder_config.vocab_size, own_output_weight=own_weight)
        self.binary_head = SentenceOrderHead(self.encoder.config) if self.cfg.get("binary_head", False) else None

    # ------------------------------------------------------------------ losses
    def loss_normalizers(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        return {"mlm": self.data_parallel_normalizer(float(batch["loss_mask"].sum())),
                "sentence_order": self.data_parallel_normalizer(float(batch["input_ids"].shape[0]))}

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.encoder.word_embeddings_weight() if self.encoder.pre_process else None
        return self.mlm_head(hidden, weight)

    def head_losses(self, hidden, batch, normalizers) -> Dict[str, torch.Tensor]:
        logits = self.mlm_logits(hidden)
        losses = {"mlm": MaskedLMHead.loss(logits, batch["lm_labels"], batch["loss_mask"], normalizers["mlm"])}
        if self.binary_head is not None:
            binary_logits = self.binary_head(hidden)
            self._last_binary = (binary_logits.detach(), batch["sentence_order_labels"])
            losses["sentence_order"] = F.cross_entropy(
                binary_logits.float(), batch["sentence_order_labels"], reduction="sum") / normalizers["sentence_order"]
        return losses

    # ------------------------------------------------------------------ logging
    def on_train_batch_start(self, batch, batch_idx):
        super().on_train_batch_start(batch, batch_idx)
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self._step_started is None:
            return
        elapsed = time.perf_counter() - self._step_started
        tokens = int(batch["attention_mask"].sum())
        self.log("tokens_per_sec", tokens / max(elapsed, 1e-9))
        if self.trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True)

    def _log_losses(self, split, losses, loss, batch) -> None:
        super()._log_losses(split, losses, loss, batch)
        sync = split != "train"
        mlm = losses["mlm"].detach()
        if len(losses) == 1:  # with the binary head the base class logs every named loss
            self.log(f"{split}_mlm_loss", mlm, sync_dist=sync)
        self.log(f"{split}_perplexity", torch.exp(mlm.clamp(max=50.0)), sync_dist=sync)
        if self.binary_head is not None and getattr(self, "_last_binary", None) is not None:
            logits, labels = self._last_binary
            self.log(f"{split}_sentence_order_accuracy", (logits.argmax(-1) == labels).float().mean(), sync_dist=sync)

    # ------------------------------------------------------------------ data
    def _build_dataloader(self, data_config, split: str):
        from biomegatron_nemo.data.pretraining import build_pretraining_dataloader
        from biomegatron_nemo.data.resumable import DataParallelSequentialSampler, SkipConsumedSamples

        from megatron.core import parallel_state

        loader = build_pretraining_dataloader(self, data_config, split)
        dataset = SkipConsumedSamples(loader.dataset) if split == "train" else loader.dataset
        # megatron-core's sample index is already a seeded permutation. Our own data-parallel
        # sampler keeps that order: Lightning would otherwise inject a *shuffling*
        # DistributedSampler for training, which breaks the exact resume.
        sampler = DataParallelSequentialSampler(dataset, parallel_state.get_data_parallel_world_size(),
                                                parallel_state.get_data_parallel_rank())
        return torch.utils.data.DataLoader(
            dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last,
            num_workers=loader.num_workers, persistent_workers=loader.persistent_workers,
            collate_fn=loader.collate_fn)

    def _skip_consumed_samples(self, global_step: int) -> None:
        """Resume on the sample after the last one the checkpointed run trained on.

        Called while the checkpoint is restored — before Lightning creates (and prefetches
        from) the training iterator.
        """
        from megatron.core import parallel_state

        dataset = getattr(self._train_dl, "dataset", None)
        if dataset is None or not hasattr(dataset, "skip"):
            return
        accumulate = int(self.trainer.accumulate_grad_batches) if self._trainer is not None else 1
        global_batch = self._train_dl.batch_size * parallel_state.get_data_parallel_world_size() * accumulate
        dataset.skip(global_step * global_batch)

    def on_load_checkpoint(self, checkpoint) -> None:
        self._skip_consumed_samples(int(checkpoint.get("global_step", 0)))
