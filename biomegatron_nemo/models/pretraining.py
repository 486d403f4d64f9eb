"""``BioMegatronPretrainingModel``: masked-LM (+ optional sentence-order) pretraining.

Batches follow the contract of :mod:`biomegatron_nemo.data.pretraining` (``input_ids``,
``token_type_ids``, ``attention_mask``, ``lm_labels``, ``loss_mask`` and, with the binary
head, ``sentence_order_labels``). Logged: MLM loss and perplexity, binary-head loss and
accuracy, learning rate, tokens/s (a run also draws the losses: :mod:`biomegatron_nemo.runs.loss_curve`).
Tensor, pipeline and data parallel per the strategy.

``forward(input_ids, attention_mask, token_type_ids, loss_mask=None)``: with ``loss_mask`` the
masked-LM head runs on those positions only (about 15% in training, where the loss reads no
others; at base size the vocabulary-wide output layer is a fifth of the forward's FLOPs), else on
every position.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from omegaconf import DictConfig

from biomegatron_nemo.checkpoints.weights import WeightLayout
from biomegatron_nemo.common.config import option, section, to_plain
from biomegatron_nemo.data.pretraining import PretrainingDataConfig, PretrainingSplitConfig
from biomegatron_nemo.encoder.heads import MaskedLMHead, SentenceOrderHead
from biomegatron_nemo.encoder.model import MegatronBertEncoder
from biomegatron_nemo.models.base import BioMegatronModelPT
from biomegatron_nemo.models.config import BioMegatronModelConfig
from biomegatron_nemo.models.outputs import MaskedLMOutput
from biomegatron_nemo.parallel.state import data_parallel_normalizer


@dataclass
class PretrainingModelConfig(BioMegatronModelConfig):
    """``model:`` of :class:`BioMegatronPretrainingModel`."""

    binary_head: bool = option(False, "sentence-order head and loss (segments swapped with p = 0.5)")
    data: PretrainingDataConfig = section(PretrainingDataConfig, "corpora and masking, shared by the splits")
    train_ds: Optional[PretrainingSplitConfig] = section(PretrainingSplitConfig, "training loader")
    validation_ds: Optional[PretrainingSplitConfig] = section(PretrainingSplitConfig, "validation loader")
    test_ds: Optional[PretrainingSplitConfig] = option(None, "test loader (needs num_samples)")


class BioMegatronPretrainingModel(BioMegatronModelPT):
    """Megatron-BERT pretraining on megatron-core's BERT masked dataset."""

    config_class = PretrainingModelConfig
    ties_output_to_embeddings = True
    head_inputs = ("loss_mask",)

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        self._step_started: Optional[float] = None
        super().__init__(cfg=cfg, trainer=trainer)

    def build_heads(self) -> None:
        if not self.encoder.post_process:
            return
        own_weight = not self.encoder.pre_process  # last pipeline stage keeps a tied copy
        self.mlm_head = MaskedLMHead(self.encoder.config, self.encoder.padded_vocab_size,
                                     self.encoder_config.vocab_size, own_output_weight=own_weight)
        self.binary_head = SentenceOrderHead(self.encoder.config) if self.config.binary_head else None

    def weight_layout(self) -> WeightLayout:
        layout = super().weight_layout()
        if getattr(self, "mlm_head", None) is None:
            return layout
        vocab = ["mlm_head.output_layer.bias"]
        tied = {}
        if self.mlm_head.output_layer.weight is not None:  # the last stage's copy of the embeddings
            vocab.append("mlm_head.output_layer.weight")
            tied["mlm_head.output_layer.weight"] = f"encoder.{MegatronBertEncoder.WORD_EMBEDDINGS_KEY}"
        return WeightLayout(layout.vocab_sized + tuple(vocab), tied, layout.vocab_size)

    # ------------------------------------------------------------------ losses
    def hf_export(self, state):
        from biomegatron_nemo.checkpoints.hf import pretraining_heads_to_hf

        name = "MegatronBertForPreTraining" if self.binary_head is not None else "MegatronBertForMaskedLM"
        return name, pretraining_heads_to_hf(state), {}

    def loss_normalizers(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        return {"mlm": data_parallel_normalizer(float(batch["loss_mask"].sum())),
                "sentence_order": data_parallel_normalizer(float(batch["input_ids"].shape[0]))}

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.encoder.word_embeddings_weight() if self.encoder.pre_process else None
        return self.mlm_head(hidden, weight)

    def head_outputs(self, hidden, attention_mask, loss_mask: Optional[torch.Tensor] = None) -> MaskedLMOutput:
        """Masked-LM logits of every position, or ``[n, 1, vocab]`` of the ``n`` positions of
        ``loss_mask`` (megatron-core's linears expect three dimensions); sentence-order logits."""
        selected = hidden[loss_mask.bool()].unsqueeze(1) if loss_mask is not None else hidden
        logits = self.mlm_logits(selected)
        binary_logits = self.binary_head(hidden) if self.binary_head is not None else None
        return MaskedLMOutput(logits=logits, sentence_order_logits=binary_logits, vocab_size=self.tokenizer.vocab_size)

    def loss(self, output: MaskedLMOutput, batch, normalizers=None) -> Dict[str, torch.Tensor]:
        """The masked-LM loss over the ``loss_mask`` positions (``output`` from ``forward`` with
        that mask; its logits are consumed) and the sentence-order loss."""
        normalizers = normalizers or self.loss_normalizers(batch)
        labels = batch["lm_labels"][batch["loss_mask"].bool()].unsqueeze(1)
        losses = {"mlm": MaskedLMHead.loss(output.logits, labels, torch.ones_like(labels), normalizers["mlm"])}
        if output.sentence_order_logits is not None:
            losses["sentence_order"] = F.cross_entropy(output.sentence_order_logits.float(),
                                                       batch["sentence_order_labels"],
                                                       reduction="sum") / normalizers["sentence_order"]
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

    def log_step(self, split, losses, output: MaskedLMOutput, batch) -> None:
        super().log_step(split, losses, output, batch)
        sync = split != "train"
        mlm = losses["mlm"].detach()
        if len(losses) == 1:  # with the binary head the base class logs every named loss
            self.log(f"{split}_mlm_loss", mlm, sync_dist=sync)
        self.log(f"{split}_perplexity", torch.exp(mlm.clamp(max=50.0)), sync_dist=sync)
        if output.sentence_order_logits is not None:
            correct = output.sentence_order_logits.argmax(-1) == batch["sentence_order_labels"]
            self.log(f"{split}_sentence_order_accuracy", correct.float().mean(), sync_dist=sync)

    # ------------------------------------------------------------------ data
    def _default_num_samples(self, split: str, micro_batch_size: int) -> Optional[int]:
        """Training: ``max_steps × global batch`` when the trainer fixes the number of steps."""
        from megatron.core import parallel_state

        trainer = self._trainer
        if split != "train" or trainer is None or trainer.max_steps is None or trainer.max_steps <= 0:
            return None
        accumulate = int(trainer.accumulate_grad_batches or 1)
        return int(trainer.max_steps) * micro_batch_size * parallel_state.get_data_parallel_world_size() * accumulate

    def build_dataloader(self, data_config, split: str):
        from megatron.core import parallel_state

        from biomegatron_nemo.data.pretraining import build_pretraining_dataloader
        from biomegatron_nemo.data.resumable import ResumableDataLoader, SequentialSampler

        config = self.config
        dataset_cfg = {**to_plain(config.data), "seed": config.seed, "binary_head": config.binary_head}
        loader = build_pretraining_dataloader(
            dataset_cfg, data_config, split, self.tokenizer,
            num_samples=self._default_num_samples(split, data_config.micro_batch_size))
        # megatron-core's sample index is already a seeded permutation: keep its order, split over
        # the data-parallel ranks; training resumes mid-epoch at exactly the next batch
        sampler = SequentialSampler(len(loader.dataset), parallel_state.get_data_parallel_world_size(),
                                    parallel_state.get_data_parallel_rank())
        loader_class = ResumableDataLoader if split == "train" else torch.utils.data.DataLoader
        return loader_class(
            loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last,
            num_workers=loader.num_workers, persistent_workers=loader.persistent_workers,
            collate_fn=loader.collate_fn)

    def on_load_checkpoint(self, checkpoint) -> None:
        super().on_load_checkpoint(checkpoint)
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        if fit_loop.get("state_dict", {}).get("combined_loader") == [{}] and self._train_dl is not None:
            # written by a version whose loader kept no place: Lightning's own count of the
            # epoch's batches is the same number
            batches = fit_loop.get("epoch_loop.batch_progress", {}).get("current", {}).get("ready", 0)
            self._train_dl.resume_at(int(batches))
