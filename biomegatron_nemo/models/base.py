"""``BioMegatronModelPT``: the NeMo ``ModelPT`` that every BioMegatron task model shares.

It owns the model lifecycle around the encoder:

* the tokenizer, built from ``cfg.tokenizer`` with its files ``register_artifact``-ed so the
  ``.nemo`` carries them;
* the megatron-core encoder, built from ``cfg.encoder`` for this rank's tensor/pipeline
  position — in ``__init__`` when there is no trainer (inference, ``restore_from``), else in
  Lightning's ``configure_model()`` hook, which runs after the strategy has set up
  ``parallel_state`` (rank 0 of a ``devices=N`` launch even constructs the model before any
  process group exists);
* the optimizer and LR schedule through NeMo's ``optim`` config, with weight decay off for
  biases and LayerNorm weights (BERT's recipe);
* layout-free ``.nemo`` files through :class:`LayoutFreeSaveRestoreConnector` (TP=2 save →
  TP=1 restore and the reverse);
* ``init_from``: weights of another ``.nemo`` (e.g. a pretrained encoder) with a clear error
  naming every mismatching tensor.

Subclasses add their heads in :meth:`build_heads` and their data, steps and metrics.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.core.classes import ModelPT
from nemo.core.classes.common import ALLOWED_TARGET_PREFIXES

from biomegatron_nemo.checkpoints.layout import (
    gather_layout_free_state_dict,
    shard_layout_free_state_dict,
    tensor_shapes,
)
from biomegatron_nemo.checkpoints.nemo_connector import LayoutFreeSaveRestoreConnector
from biomegatron_nemo.encoder.config import EncoderConfig
from biomegatron_nemo.tokenizers import BioTokenizer, build_tokenizer

TOKENIZER_FILE_KEYS = ("vocab_file", "model_file")

# NeMo 3.0 refuses to instantiate `target:` classes outside an allow-list when restoring.
if "biomegatron_nemo." not in ALLOWED_TARGET_PREFIXES:
    ALLOWED_TARGET_PREFIXES.append("biomegatron_nemo.")


class BioMegatronModelPT(ModelPT):
    """Tokenizer + megatron-core encoder + NeMo lifecycle; task heads come from subclasses."""

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        self._modules_built = False
        super().__init__(cfg=cfg, trainer=trainer)
        # A restored model gets its weights from the .nemo; init_from applies to new models only.
        # (Decided now: NeMo's restore flag is class state and may change before configure_model.)
        self._being_restored = self._is_model_being_restored()
        self._save_restore_connector = LayoutFreeSaveRestoreConnector()
        self.tokenizer: BioTokenizer = self._setup_tokenizer()
        # restore_from loads weights right after construction: the layers must exist then.
        if self._can_build_now(trainer) or self._being_restored:
            self.configure_model()

    # ------------------------------------------------------------------ construction
    def _setup_tokenizer(self) -> BioTokenizer:
        if "tokenizer" not in self.cfg:
            raise ValueError("model config has no 'tokenizer' section (library, vocab_file | model_file)")
        # Register the tokenizer's files first: register_artifact returns the path to read —
        # the user's file when training, the copy inside the unpacked .nemo when restoring.
        for key in TOKENIZER_FILE_KEYS:
            if self.cfg.tokenizer.get(key):
                resolved = self.register_artifact(f"tokenizer.{key}", self.cfg.tokenizer[key])
                with open_dict(self.cfg):
                    self.cfg.tokenizer[key] = resolved
        return build_tokenizer(self.cfg.tokenizer)

    @staticmethod
    def _can_build_now(trainer: Optional[Trainer]) -> bool:
        """Without a trainer (inference, ``restore_from``) build at once; with one, wait for
        ``configure_model()``: the trainer's strategy sets up the parallel layout first."""
        return trainer is None

    @property
    def encoder_config(self) -> EncoderConfig:
        values = OmegaConf.to_container(self.cfg.encoder, resolve=True)
        values["vocab_size"] = self.tokenizer.vocab_size
        return EncoderConfig.from_dict(values)

    def configure_model(self) -> None:
        """Build encoder and heads once megatron-core's parallel state is available."""
        if self._modules_built:
            return
        from megatron.core import parallel_state

        from biomegatron_nemo.encoder.model import build_encoder
        from biomegatron_nemo.parallel import initialize_megatron

        if not parallel_state.model_parallel_is_initialized():
            initialize_megatron(1, 1, seed=int(self.cfg.get("seed", 1234)))
        else:
            torch.manual_seed(int(self.cfg.get("seed", 1234)))
        self.encoder = build_encoder(self.encoder_config)
        self.build_heads()
        self._modules_built = True
        # `init_from` (pretraining) or NeMo 1.x's `language_model.nemo_file` (fine-tuning)
        init_from = self.cfg.get("init_from") or (self.cfg.get("language_model") or {}).get("nemo_file")
        if init_from and not self._being_restored:
            self.load_pretrained_weights(init_from)

    def build_heads(self) -> None:
        """Subclasses create their task heads here (``self.encoder`` exists). With pipeline
        parallelism only the last stage (``self.encoder.post_process``) builds heads."""

    # ------------------------------------------------------------------ losses and steps
    def loss_normalizers(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """Whole-batch counts that turn summed losses into means (e.g. masked tokens).

        Computed once per batch, so pipeline microbatches sum to the unsplit batch's loss.
        """
        raise NotImplementedError

    @staticmethod
    def data_parallel_normalizer(local_count: float) -> float:
        """Global count over the data-parallel group, divided by its size.

        DDP averages gradients over data-parallel ranks; a rank loss of ``local_sum / this``
        therefore averages to ``global_sum / global_count`` — exactly the loss of the global
        batch, however unevenly the counted items (e.g. masked tokens) fall across ranks.
        """
        from megatron.core import parallel_state

        if not parallel_state.model_parallel_is_initialized():
            return max(local_count, 1.0)
        dp = parallel_state.get_data_parallel_world_size()
        if dp == 1:
            return max(local_count, 1.0)
        total = torch.tensor([float(local_count)], dtype=torch.float64)
        torch.distributed.all_reduce(total, group=parallel_state.get_data_parallel_group())
        return max(float(total.item()), 1.0) / dp

    def head_losses(self, hidden: torch.Tensor, batch: Dict[str, torch.Tensor],
                    normalizers: Dict[str, float]) -> Dict[str, torch.Tensor]:
        """Named losses from the last stage's ``[b, s, h]`` hidden states."""
        raise NotImplementedError

    def encode(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``[b, s, h]`` hidden states of a batch (no pipeline parallelism)."""
        return self.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def compute_losses(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.head_losses(self.encode(batch), batch, self.loss_normalizers(batch))

    @property
    def pipeline_parallel(self) -> bool:
        from megatron.core import parallel_state

        return parallel_state.get_pipeline_model_parallel_world_size() > 1

    @property
    def pipeline_runner(self):
        """Lazily built: ``torch.distributed.pipelining`` stages for this model (PP > 1)."""
        if getattr(self, "_pipeline_runner", None) is None:
            from biomegatron_nemo.parallel.pipeline import PipelineRunner

            num_microbatches = int(self.cfg.get("pipeline", {}).get("num_microbatches", 1))
            object.__setattr__(self, "_pipeline_runner", PipelineRunner(self, num_microbatches))
        return self._pipeline_runner

    def on_fit_start(self) -> None:
        # Pipeline stages run backward inside the schedule, so they step the optimizer by hand.
        if self.pipeline_parallel:
            self.automatic_optimization = False

    def on_train_batch_start(self, batch, batch_idx):
        """Seed dropout from (seed, pipeline stage, step): a resumed run draws exactly the masks
        an uninterrupted one would, whatever else consumed random numbers in between (data
        iterators, validation). Same seed on tensor- and data-parallel ranks, as Megatron-LM."""
        from megatron.core import parallel_state

        from biomegatron_nemo.parallel.state import seed_everything_model_parallel

        stage = parallel_state.get_pipeline_model_parallel_rank()
        seed_everything_model_parallel(int(self.cfg.get("seed", 1234)) + 100 * stage + self.trainer.global_step)

    def training_step(self, batch, batch_idx):
        if self.pipeline_parallel:
            loss = self._pipeline_training_step(batch)
            self.log("train_loss", loss, prog_bar=True)
            return loss
        losses = self.compute_losses(batch)
        loss = sum(losses.values())
        self._log_losses("train", losses, loss, batch)
        return loss

    def _pipeline_training_step(self, batch) -> torch.Tensor:
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = self.pipeline_runner.step(batch)
        clip = self.trainer.gradient_clip_val if self.trainer is not None else None
        if clip:
            self.configure_gradient_clipping(optimizer, clip, "norm")
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip by the norm of the whole model, across tensor and pipeline ranks."""
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm not in (None, "norm"):
            raise ValueError(f"gradient_clip_algorithm={gradient_clip_algorithm!r}: only 'norm' is supported")
        from biomegatron_nemo.parallel.grad_clip import clip_grad_norm_model_parallel

        params = [p for group in optimizer.param_groups for p in group["params"]]
        clip_grad_norm_model_parallel(params, float(gradient_clip_val))

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if self.pipeline_parallel:
            loss = self.pipeline_runner.evaluate(batch)
            self.log("val_loss", loss, prog_bar=True, sync_dist=True)
            return loss
        losses = self.compute_losses(batch)
        loss = sum(losses.values())
        self._log_losses("val", losses, loss, batch)
        return loss

    def _log_losses(self, split: str, losses: Dict[str, torch.Tensor], loss: torch.Tensor, batch) -> None:
        sync = split != "train"
        self.log(f"{split}_loss", loss, prog_bar=True, sync_dist=sync)
        if len(losses) > 1:
            for name, value in losses.items():
                self.log(f"{split}_{name}_loss", value, sync_dist=sync)

    # ------------------------------------------------------------------ optimisation
    def setup_optimizer_param_groups(self):
        if "optim_param_groups" in self.cfg:
            return super().setup_optimizer_param_groups()
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or name.endswith(".bias") else decay).append(param)
        self._optimizer_param_groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    # ------------------------------------------------------------------ layout-free weights
    def _vocab_keys(self) -> List[str]:
        from megatron.core.tensor_parallel import VocabParallelEmbedding

        from biomegatron_nemo.encoder.heads import MaskedLMHead

        keys = []
        for name, module in self.named_modules():
            if isinstance(module, VocabParallelEmbedding):
                keys.append(f"{name}.weight")
            elif isinstance(module, MaskedLMHead):
                keys.append(f"{name}.output_layer.bias")
                if module.output_layer.weight is not None:
                    keys.append(f"{name}.output_layer.weight")
        return keys

    def _tied_weight_aliases(self) -> Dict[str, str]:
        """Local copies of the word embeddings (last pipeline stage) → the canonical key."""
        from biomegatron_nemo.encoder.heads import MaskedLMHead

        aliases = {}
        for name, module in self.named_modules():
            if isinstance(module, MaskedLMHead) and module.output_layer.weight is not None:
                aliases[f"{name}.output_layer.weight"] = "encoder.embedding.word_embeddings.weight"
        return aliases

    def layout_free_state_dict(self) -> Dict[str, torch.Tensor]:
        """Full weights, independent of TP/PP. Collective: call on every rank."""
        return gather_layout_free_state_dict(
            self, vocab_keys=self._vocab_keys(), vocab_size=self.tokenizer.vocab_size,
            drop_keys=self._tied_weight_aliases())

    def load_layout_free_state_dict(self, state_dict, strict: bool = True):
        """Load full weights into this rank's shards; ``strict`` names missing/unused tensors."""
        from megatron.core import parallel_state

        aliases = self._tied_weight_aliases()
        local = shard_layout_free_state_dict(self, state_dict, vocab_keys=self._vocab_keys(), aliases=aliases)
        if strict:
            missing = sorted(set(tensor_shapes(self)) - set(local))
            if missing:
                raise ValueError(f"checkpoint lacks weights the model needs: {missing}")
            if parallel_state.get_pipeline_model_parallel_world_size() == 1:
                unused = sorted(set(state_dict) - {aliases.get(k, k) for k in local})
                if unused:
                    raise ValueError(f"checkpoint has weights the model does not use: {unused}")
        return self.load_state_dict(local, strict=False)

    @contextlib.contextmanager
    def state_dict_override(self, state: Dict[str, torch.Tensor]) -> Iterator[None]:
        """Make ``state_dict()`` return ``state`` (NeMo's connector writes what it returns)."""
        self.state_dict = lambda *args, **kwargs: state  # instance attribute shadows the method
        try:
            yield
        finally:
            del self.state_dict

    def load_pretrained_weights(self, path: str, prefixes=("encoder.",)) -> None:
        """Initialise from another ``.nemo`` (e.g. a pretrained encoder), weights under ``prefixes``.

        Shape or vocabulary mismatches raise one ValueError naming every mismatching tensor.
        """
        import tarfile
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(path) as tar:
                member = next((m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt")), None)
                if member is None:
                    raise ValueError(f"{path}: not a .nemo file (no model_weights.ckpt inside)")
                tar.extract(member, tmp, filter="data")
                full = torch.load(f"{tmp}/{member.name}", map_location="cpu", weights_only=True)
        full = {k: v for k, v in full.items() if k.startswith(tuple(prefixes))}
        if not full:
            raise ValueError(f"{path}: no weights under {list(prefixes)}")
        own = self.layout_free_state_dict()
        problems = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in full.items() if k in own and own[k].shape != v.shape]
        missing = sorted(k for k in own if k.startswith(tuple(prefixes)) and k not in full)
        if problems or missing:
            details = problems + [f"{k}: missing from checkpoint" for k in missing]
            raise ValueError(f"cannot initialise from {path}; mismatching tensors:\n  " + "\n  ".join(details))
        local = shard_layout_free_state_dict(self, full, vocab_keys=self._vocab_keys(),
                                             aliases=self._tied_weight_aliases())
        self.load_state_dict(local, strict=False)

    # ------------------------------------------------------------------ NeMo
    @classmethod
    def restore_from(cls, restore_path: str, *args, save_restore_connector=None, **kwargs):
        """NeMo's ``restore_from`` with the layout-free, weights-only connector by default.

        Works in a process whose tensor/pipeline layout differs from the one that saved.
        """
        if save_restore_connector is None:
            save_restore_connector = LayoutFreeSaveRestoreConnector()
        return super().restore_from(restore_path, *args, save_restore_connector=save_restore_connector, **kwargs)

    @classmethod
    def list_available_models(cls) -> List:
        """No ``.nemo`` checkpoints of this library are published yet; NGC's BioMegatron
        checkpoints are Megatron-LM files, imported through ``biomegatron_nemo.checkpoints``."""
        return []

    def setup_training_data(self, train_data_config):
        self._train_dl = self._build_dataloader(train_data_config, "train") if train_data_config else None

    def setup_validation_data(self, val_data_config):
        self._validation_dl = self._build_dataloader(val_data_config, "validation") if val_data_config else None

    def setup_test_data(self, test_data_config):
        self._test_dl = self._build_dataloader(test_data_config, "test") if test_data_config else None

    def _build_dataloader(self, data_config, split: str):
        """Subclasses return a ``DataLoader`` for ``split`` (Lightning adds the data-parallel
        sampler through the strategy)."""
        raise NotImplementedError(f"{type(self).__name__} does not define {split} data")
