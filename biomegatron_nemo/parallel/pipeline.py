"""Pipeline-parallel training steps on CPU and GPU with ``torch.distributed.pipelining``.

Stages are partitioned the megatron-core way (the first stage owns the embeddings, the last the
final LayerNorm and the heads, each builds its share of layers with megatron-core's layer
offset). megatron-core's own schedules hard-code CUDA, so the stages run under PyTorch's
``ScheduleGPipe``, which works with ``gloo`` and ``nccl`` alike.

Every rank of one pipeline loads the same batch (the sampler splits data over data-parallel
ranks only), so side inputs — attention mask, token types, labels — reach every stage as
microbatched keyword arguments; only hidden states travel between stages.

Losses are normalised by whole-batch counts (:meth:`loss_normalizers`), so the sum of the
microbatch losses equals the loss of the unsplit batch and PP=2 matches PP=1 exactly.
After the schedule: the word-embedding gradients of the first and last stage (tied MLM output
weights) are all-reduced over megatron-core's embedding group, and all gradients averaged over
the data-parallel group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

from biomegatron_nemo.common.config import Schema, option
from biomegatron_nemo.common.errors import ConfigError


@dataclass
class PipelineConfig(Schema):
    """The ``pipeline:`` section: how a batch flows through pipeline stages (PP > 1 only)."""

    num_microbatches: int = option(1, "GPipe microbatches per batch; must divide the batch size")

    def check(self) -> None:
        if self.num_microbatches < 1:
            raise ConfigError(f"must be >= 1, got {self.num_microbatches}", key="num_microbatches")


class _StageModule(torch.nn.Module):
    """One pipeline stage of a BioMegatron model: its encoder part (+ the heads on the last).

    The last stage runs the model's heads (``head_outputs``) and its ``loss``; in evaluation it
    keeps each microbatch's output (detached) so that the runner can hand the whole batch's
    output back to the model's metric collection.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.normalizers: Dict[str, float] = {}
        self.keep_outputs = False
        self.outputs: List = []

    def forward(self, x: torch.Tensor, **batch: torch.Tensor) -> torch.Tensor:
        encoder = self.model.encoder
        if encoder.pre_process:
            hidden = encoder(x, batch["attention_mask"], batch.get("token_type_ids"))
        else:
            hidden = encoder(None, batch["attention_mask"], hidden_states=x)
        if not encoder.post_process:
            return hidden
        model = self.model
        output = model.head_outputs(hidden, batch["attention_mask"], **{k: batch[k] for k in model.head_inputs})
        if self.keep_outputs:  # for metric collection (a masked-LM loss consumes its logits, not the rest)
            self.outputs.append(output.detach())
        return sum(model.loss(output, batch, self.normalizers).values())


class PipelineRunner:
    """Runs one batch through the pipeline: forward + backward for training, forward for evaluation."""

    def __init__(self, model, num_microbatches: int = 1):
        self.model = model
        self.num_microbatches = int(num_microbatches)
        self.stage_module = _StageModule(model)
        self.group = parallel_state.get_pipeline_model_parallel_group()
        device = next(model.parameters()).device
        self.stage = PipelineStage(
            self.stage_module,
            stage_index=parallel_state.get_pipeline_model_parallel_rank(),
            num_stages=parallel_state.get_pipeline_model_parallel_world_size(),
            device=device,
            group=self.group,
        )
        # Microbatch losses are already normalised by whole-batch counts, so they sum to the
        # batch loss: the schedule must not divide gradients by the number of microbatches.
        self.schedule = ScheduleGPipe(self.stage, n_microbatches=self.num_microbatches,
                                      loss_fn=lambda output, _target: output, scale_grads=False)
        # found once: the model's weight layout is walked over all its modules
        self.tied_weight = _tied_weights(model)
        sync_tied_embeddings(model, self.tied_weight)

    def step(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward and backward of ``batch``; gradients are accumulated, not applied."""
        loss = self._run(batch, self.schedule.step)
        finalize_pipeline_grads(self.model, self.tied_weight)
        return loss

    @torch.no_grad()
    def evaluate(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Optional[object]]:
        """Forward only: the loss of ``batch`` on every stage, and on the last stage the heads'
        output for the whole batch (microbatches merged in order; None on other stages)."""
        self.stage_module.keep_outputs, self.stage_module.outputs = True, []
        try:
            loss = self._run(batch, self.schedule.eval)
            # The microbatches run last and in order; a stage may run an extra forward before
            # them (the pipelining library's shape inference on a stage's first batch).
            parts = self.stage_module.outputs[-self.num_microbatches:]
        finally:
            self.stage_module.keep_outputs, self.stage_module.outputs = False, []
        if not parts:
            return loss, None
        if len(parts) != self.num_microbatches:
            raise RuntimeError(f"the last stage ran {len(parts)} microbatches, expected {self.num_microbatches}")
        return loss, type(parts[0]).concat(parts)

    def _run(self, batch: Dict[str, torch.Tensor], run) -> torch.Tensor:
        if batch["input_ids"].shape[0] % self.num_microbatches:
            raise ValueError(f"batch size {batch['input_ids'].shape[0]} is not divisible by "
                             f"pipeline.num_microbatches {self.num_microbatches}")
        self.stage_module.normalizers = self.model.loss_normalizers(batch)
        kwargs = {k: v for k, v in batch.items() if k != "input_ids" and isinstance(v, torch.Tensor)}
        losses: list = []
        # The loss function ignores its target; ScheduleGPipe requires one per microbatch.
        # Outputs are scalar losses, which the schedule cannot concatenate: not returned.
        target = torch.zeros(batch["input_ids"].shape[0])
        inputs = (batch["input_ids"],) if self.stage.is_first else ()
        run(*inputs, target=target, losses=losses, return_outputs=False, **kwargs)
        loss = torch.stack(losses).sum().detach() if losses else torch.zeros(())
        # Every stage reports the loss (the last computed it).
        dist.all_reduce(loss, group=self.group)
        return loss


def pipeline_training_step(model, runner: PipelineRunner, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """One optimiser step of a pipeline stage (Lightning's manual optimisation: the stages run
    their backward inside the schedule): zero, forward + backward, clip, step, schedule."""
    optimizer = model.optimizers()
    optimizer.zero_grad()
    loss = runner.step(batch)
    clip = model.trainer.gradient_clip_val if model.trainer is not None else None
    model.configure_gradient_clipping(optimizer, clip, "norm")  # also the NaN/inf guard
    optimizer.step()
    scheduler = model.lr_schedulers()
    if scheduler is not None:
        scheduler.step()
    return loss


def _tied_weights(model) -> Optional[torch.nn.Parameter]:
    """The word-embedding matrix on the first stage, or the last stage's copy of it (the model's
    ``weight_layout().tied_copies`` names it)."""
    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return None
    if model.encoder.pre_process:
        return model.encoder.word_embeddings_weight()
    params = dict(model.named_parameters())
    copies = [params[k] for k in model.weight_layout().tied_copies if k in params]
    return copies[0] if copies else None


def _has_tied_head(model) -> bool:
    # A class-level declaration: every rank must agree whether to join the embedding-group collective.
    return getattr(model, "ties_output_to_embeddings", False)


@torch.no_grad()
def sync_tied_embeddings(model, weight: Optional[torch.nn.Parameter]) -> None:
    """Make the last stage's output weights (``weight``) equal the first stage's word embeddings."""
    if not _has_tied_head(model) or not parallel_state.is_rank_in_embedding_group():
        return
    if not model.encoder.pre_process:
        weight.zero_()
    dist.all_reduce(weight.data, group=parallel_state.get_embedding_group())


def finalize_pipeline_grads(model, weight: Optional[torch.nn.Parameter]) -> None:
    """All-reduce the tied-embedding grads (``weight``: this stage's copy) across first/last
    stage, then average over data parallel."""
    if _has_tied_head(model) and parallel_state.is_rank_in_embedding_group():
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        dist.all_reduce(weight.grad, group=parallel_state.get_embedding_group())
    dp = parallel_state.get_data_parallel_world_size()
    if dp > 1:
        group = parallel_state.get_data_parallel_group()
        for param in model.parameters():
            if param.requires_grad:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                dist.all_reduce(param.grad, group=group)
                param.grad.div_(dp)
