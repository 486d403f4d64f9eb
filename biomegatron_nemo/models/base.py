"""``BioMegatronModelPT``: the NeMo ``ModelPT`` lifecycle and the task contract every BioMegatron
model shares.

It owns the lifecycle around the encoder:

* the config, checked against the model's schema (:attr:`config_class`) before anything is built,
  kept as NeMo's ``cfg`` (what a ``.nemo`` saves) and read as the typed :attr:`config`;
* the tokenizer, built from ``tokenizer`` with its files ``register_artifact``-ed so the ``.nemo``
  carries them;
* the megatron-core encoder and the heads, built for this rank's tensor/pipeline position — in
  ``__init__`` when there is no trainer (inference, ``restore_from``), else in Lightning's
  ``configure_model()`` hook, which runs after the strategy has set up ``parallel_state``;
* training / validation / test steps, on one stage or through the pipeline
  (:mod:`biomegatron_nemo.parallel.pipeline`), and the optimiser through NeMo's ``optim`` config
  with weight decay off for biases and LayerNorm weights (BERT's recipe);
* layout-free ``.nemo`` files, verified by checksums (restored by this class's ``restore_from``
  and by NeMo's ``ModelPT.restore_from``), and the pretrained checkpoint a config names
  (``language_model.pretrained``), which decides the architecture and vocabulary and initialises
  the weights (:mod:`~biomegatron_nemo.models.from_pretrained`);
* numerical faults: a NaN or inf gradient norm stops the run or skips the update (``on_nonfinite``).

The task contract (what every model — pretraining, NER, relation extraction, QA — implements):

``forward(input_ids, attention_mask, token_type_ids=None)``
    The encoder, then :meth:`head_outputs`: a typed :mod:`~biomegatron_nemo.models.outputs`
    value holding the logits. Training, evaluation, ``predict``, ONNX and Hugging Face export all
    call it. :attr:`head_inputs` names batch entries a model's heads also take (pretraining: the
    positions to predict); :meth:`forward_inputs` picks all of them from a batch.
``loss(output, batch, normalizers=None)``
    The named losses (a dict; the training loss is their sum), normalised by whole-batch counts
    (:meth:`loss_normalizers`, computed once per batch so pipeline microbatches sum to the
    unsplit batch's loss; :func:`~biomegatron_nemo.parallel.state.data_parallel_normalizer` makes
    DP=N equal DP=1).
``build_heads()``, ``build_dataloader(data_config, split)``, ``hf_export(state)``: the heads (only on
    the last pipeline stage), the data of a split, the Hugging Face heads.
``on_eval_output(split, batch, output)``
    Metric collection after each validation/test step (under pipeline parallelism on the last
    stage only). Reduce in ``on_validation_epoch_end`` / ``on_test_epoch_end``, gathering over ranks.
``weight_layout()``: which tensors are vocabulary-sized or tied copies (default: the word embeddings).
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from typing import Dict, List, Optional, Tuple, Type

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.core.classes import ModelPT

from biomegatron_nemo.checkpoints import weights
from biomegatron_nemo.checkpoints.checksums import verify_nemo_restore
from biomegatron_nemo.checkpoints.nemo_connector import LayoutFreeSaveRestoreConnector
from biomegatron_nemo.checkpoints.training import complete_saved_batch
from biomegatron_nemo.common.config import NEMO_MANAGED_KEYS, merged_config, validate_config
from biomegatron_nemo.common.logs import quiet_nemo
from biomegatron_nemo.encoder.config import EncoderConfig
from biomegatron_nemo.models.config import BioMegatronModelConfig, nemo_optim_config
from biomegatron_nemo.models.from_pretrained import apply_pretrained, pretrained_checkpoint
from biomegatron_nemo.models.outputs import ModelOutput
from biomegatron_nemo.tokenizers import LIBRARIES, BioTokenizer, build_tokenizer

log = logging.getLogger(__name__)
#: the encoder's inputs, the first arguments of every model's forward
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class BioMegatronModelPT(ModelPT):
    """Tokenizer + megatron-core encoder + NeMo lifecycle + the task contract; heads come from subclasses."""

    config_class: Type[BioMegatronModelConfig] = BioMegatronModelConfig
    #: the output layer of a head shares the word-embedding matrix (a class-level declaration:
    #: every pipeline rank must agree whether to join the embedding-group collectives)
    ties_output_to_embeddings = False
    #: batch entries besides the encoder's inputs that :meth:`forward` passes to the heads
    head_inputs: Tuple[str, ...] = ()

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        where = type(self).__name__
        cfg = merged_config(cfg, self.config_class, where=where, passthrough=NEMO_MANAGED_KEYS)
        if not self._is_model_being_restored():  # a restored config is complete; its checkpoint may be far away
            cfg = apply_pretrained(cfg, where=where)
        self._typed: Tuple[Optional[dict], Optional[BioMegatronModelConfig]] = (None, None)
        self._encoder_config: Optional[EncoderConfig] = None
        self._modules_built = False
        self._nonfinite_skipped = 0  # updates skipped by on_nonfinite=skip (kept in checkpoints)
        with quiet_nemo(self._is_model_being_restored()):
            # restoring, NeMo would warn with the train/validation/test configs (whoever trained it: their paths)
            super().__init__(cfg=cfg, trainer=trainer)
        # A restored model gets its weights from the .nemo; init_from applies to new models only.
        # (Decided now: NeMo's restore flag is class state and may change before configure_model.)
        self._being_restored = self._is_model_being_restored()
        self._save_restore_connector = LayoutFreeSaveRestoreConnector()
        self.tokenizer: BioTokenizer = self._setup_tokenizer()
        # restore_from loads weights right after construction: the layers must exist then.
        if trainer is None or self._being_restored:
            self.configure_model()

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> BioMegatronModelConfig:
        """The model's config as its schema's dataclass: what the code reads (``cfg`` is NeMo's
        DictConfig of it, which ``.nemo`` files save). Rebuilt when ``cfg`` has been changed."""
        plain = OmegaConf.to_container(self.cfg)  # a tenth of the cost of YAML: read at every step
        if self._typed[0] != plain:
            self._typed = (plain, validate_config(self.cfg, self.config_class, where=type(self).__name__,
                                                 passthrough=NEMO_MANAGED_KEYS))
        return self._typed[1]

    def set_config(self, key: str, value) -> None:
        """Set ``key`` (a dotted path) of the saved config, e.g. a label map learned from the data."""
        with open_dict(self.cfg):
            OmegaConf.update(self.cfg, key, value, merge=False)

    def config_section(self, name: str, value):
        """``value`` (a mapping, DictConfig or None) checked as the model's ``name`` section, typed."""
        if value is None:
            return None
        schema = typing.get_type_hints(self.config_class)[name]
        schema = next((a for a in typing.get_args(schema) if a is not type(None)), schema)
        return validate_config(value, schema, where=f"{type(self).__name__}.{name}")

    # ------------------------------------------------------------------ construction
    def _setup_tokenizer(self) -> BioTokenizer:
        # Register the tokenizer's file first: register_artifact returns the path to read — the
        # user's file when training, the copy inside the unpacked .nemo when restoring.
        key = LIBRARIES[self.config.tokenizer.kind]
        path = getattr(self.config.tokenizer, key)
        if path:
            self.set_config(f"tokenizer.{key}", self.register_artifact(f"tokenizer.{key}", path))
        return build_tokenizer(self.config.tokenizer)

    @property
    def encoder_config(self) -> EncoderConfig:
        """The encoder's sizes, its vocabulary the tokenizer's."""
        if self._encoder_config is None:
            given = self.cfg.encoder.get("vocab_size")  # the schema resolves null to BERT's size
            if given is not None and given != self.tokenizer.vocab_size:
                raise ValueError(f"encoder.vocab_size={given} but the tokenizer has {self.tokenizer.vocab_size} "
                                 "entries; leave encoder.vocab_size null (it follows the tokenizer)")
            self._encoder_config = dataclasses.replace(self.config.encoder, vocab_size=self.tokenizer.vocab_size)
        return self._encoder_config

    def configure_model(self) -> None:
        """Build encoder and heads once megatron-core's parallel state is available."""
        if self._modules_built:
            return
        from megatron.core import parallel_state

        from biomegatron_nemo.encoder.model import build_encoder
        from biomegatron_nemo.parallel import initialize_megatron

        config = self.config
        if not parallel_state.model_parallel_is_initialized():
            initialize_megatron(1, 1, seed=config.seed)
        else:
            torch.manual_seed(config.seed)
        self.encoder = build_encoder(self.encoder_config)
        self.build_heads()
        self._modules_built = True
        checkpoint = None if self._being_restored else pretrained_checkpoint(config)
        if checkpoint is not None:
            # tokens the tokenizer adds after its vocabulary file (e.g. entity markers) may be
            # new to the pretrained encoder: their embedding rows are added
            appended = [self.tokenizer.special_ids[t] for t in self.tokenizer.extra_special_tokens]
            full = checkpoint.weights()
            heads = {} if config.init_heads else self.pretrained_head_weights(full)
            prefixes = ("",) if config.init_heads else ("encoder.", *heads)
            weights.load_encoder_weights(self, self.weight_layout(), {**full, **heads}, checkpoint.source,
                                         prefixes=prefixes, appended_ids=appended, seed=config.seed,
                                         init_std=self.encoder_config.init_method_std)

    def build_heads(self) -> None:
        """Subclasses create their task heads here (see the module docstring)."""

    def pretrained_head_weights(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Head weights this model takes from a pretrained checkpoint's layout-free ``state`` (under
        this model's names) besides the encoder; by default none: a task's head starts from random."""
        return {}

    # ------------------------------------------------------------------ the task contract
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None, **head_inputs) -> ModelOutput:
        """The typed head outputs (logits) of a batch, on one pipeline stage (see the module docstring)."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.head_outputs(hidden, attention_mask, **head_inputs)

    def forward_inputs(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The arguments of :meth:`forward` from a batch of this model's data."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "token_type_ids": batch.get("token_type_ids")}
        inputs.update({k: batch[k] for k in self.head_inputs})
        return inputs

    def head_outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor, **head_inputs) -> ModelOutput:
        """The heads on the last stage's ``[b, s, h]`` hidden states."""
        raise NotImplementedError

    def loss(self, output: ModelOutput, batch: Dict[str, torch.Tensor],
             normalizers: Optional[Dict[str, float]] = None) -> Dict[str, torch.Tensor]:
        """The named losses of ``output`` against ``batch``'s labels (see the module docstring)."""
        raise NotImplementedError

    def loss_normalizers(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """Whole-batch counts that turn summed losses into means (see the module docstring)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ steps
    @property
    def pipeline_parallel(self) -> bool:
        from megatron.core import parallel_state

        return parallel_state.get_pipeline_model_parallel_world_size() > 1

    @property
    def pipeline_runner(self):
        """Lazily built: ``torch.distributed.pipelining`` stages for this model (PP > 1)."""
        if getattr(self, "_pipeline_runner", None) is None:
            from biomegatron_nemo.parallel.pipeline import PipelineRunner

            object.__setattr__(self, "_pipeline_runner", PipelineRunner(self, self.config.pipeline.num_microbatches))
        return self._pipeline_runner

    def on_fit_start(self) -> None:
        # Pipeline stages run backward inside the schedule, so they step the optimizer by hand.
        if self.pipeline_parallel:
            self.automatic_optimization = False
        if self.encoder_config.compile:  # in place (parameter names unchanged); lengths vary by step
            self.encoder.encoder.compile(dynamic=True)

    def on_train_batch_start(self, batch, batch_idx):
        """Seed dropout from (seed, pipeline stage, step): a resumed run draws exactly the masks
        an uninterrupted one would, whatever else consumed random numbers in between (data
        iterators, validation). Same seed on tensor- and data-parallel ranks, as Megatron-LM."""
        from megatron.core import parallel_state

        from biomegatron_nemo.parallel.state import seed_everything_model_parallel

        stage = parallel_state.get_pipeline_model_parallel_rank()
        seed_everything_model_parallel(self.config.seed + 100 * stage + self.trainer.global_step)

    def training_step(self, batch, batch_idx):
        if self.pipeline_parallel:
            from biomegatron_nemo.parallel.pipeline import pipeline_training_step

            loss = pipeline_training_step(self, self.pipeline_runner, batch)
            self.log("train_loss", loss, prog_bar=True)
            return loss
        output = self(**self.forward_inputs(batch))
        losses = self.loss(output, batch)
        self.log_step("train", losses, output, batch)
        return sum(losses.values())

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        return self._evaluation_step("val", batch)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        return self._evaluation_step("test", batch)

    def _evaluation_step(self, split: str, batch) -> torch.Tensor:
        if self.pipeline_parallel:
            # the loss is known on every stage, the heads' output on the last one only
            loss, output = self.pipeline_runner.evaluate(batch)
            self.log(f"{split}_loss", loss, prog_bar=True, sync_dist=True)
        else:
            output = self(**self.forward_inputs(batch))
            losses = self.loss(output, batch)
            loss = sum(losses.values())
            self.log_step(split, losses, output, batch)
        if output is not None:
            self.on_eval_output(split, batch, output)
        return loss

    def log_step(self, split: str, losses: Dict[str, torch.Tensor], output: ModelOutput, batch) -> None:
        """Log the total loss and, when there are several, each named one."""
        sync = split != "train"
        self.log(f"{split}_loss", sum(losses.values()), prog_bar=True, sync_dist=sync)
        if len(losses) > 1:
            for name, value in losses.items():
                self.log(f"{split}_{name}_loss", value, sync_dist=sync)

    def on_eval_output(self, split: str, batch, output: ModelOutput) -> None:
        """Metric collection hook (see the module docstring); the base collects nothing."""

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Before every optimizer step (Lightning calls this hook on each one, clipping or not):
        clip by ``gradient_clip_val`` and guard against NaN/inf (``on_nonfinite``), by the whole
        model's norm (:func:`~biomegatron_nemo.parallel.grad_clip.clip_and_check`)."""
        if gradient_clip_val and gradient_clip_algorithm not in (None, "norm"):
            raise ValueError(f"gradient_clip_algorithm={gradient_clip_algorithm!r}: only 'norm' is supported")
        from biomegatron_nemo.parallel.grad_clip import clip_and_check

        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        step = self.trainer.global_step + 1 if self._trainer is not None else None
        if clip_and_check(params, gradient_clip_val, self.config.on_nonfinite, step):
            self._nonfinite_skipped += 1
            log.warning(f"step {step}: the gradient norm is NaN or inf; this update was skipped "
                        f"({self._nonfinite_skipped} skipped so far)")
            self.log("train_nonfinite_skipped", float(self._nonfinite_skipped))

    # ------------------------------------------------------------------ optimisation
    def setup_optimizer_param_groups(self):
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or name.endswith(".bias") else decay).append(param)
        self._optimizer_param_groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def setup_optimization(self, optim_config=None, optim_kwargs=None):
        # NeMo passes every key to the optimiser / scheduler: leave the unset (null) ones out.
        return super().setup_optimization(nemo_optim_config(optim_config or self.config.optim), optim_kwargs)

    # ------------------------------------------------------------------ checkpoints
    def weight_layout(self) -> weights.WeightLayout:
        """Vocabulary-sized tensors (the vocab-parallel embeddings) and tied copies (none)."""
        from megatron.core.tensor_parallel import VocabParallelEmbedding

        vocab = tuple(f"{name}.weight" for name, module in self.named_modules()
                      if isinstance(module, VocabParallelEmbedding))
        return weights.WeightLayout(vocab_sized=vocab, vocab_size=self.tokenizer.vocab_size)

    def layout_free_state_dict(self) -> Dict[str, torch.Tensor]:
        """Full weights, independent of TP/PP. Collective: call on every rank."""
        return weights.layout_free_state_dict(self, self.weight_layout())

    def load_layout_free_state_dict(self, state_dict, strict: bool = True):
        """Load full weights into this rank's shards; ``strict`` names missing/unused tensors."""
        return weights.load_layout_free_state_dict(self, self.weight_layout(), state_dict, strict)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``torch.nn.Module.load_state_dict``, which also takes the layout-free weights every file
        of this library holds (NeMo's own ``ModelPT.restore_from`` hands them over this way, unverified)."""
        verify_nemo_restore(state_dict)
        local = self.state_dict()
        if all(k in local and local[k].shape == v.shape for k, v in state_dict.items() if torch.is_tensor(v)):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        return self.load_layout_free_state_dict(state_dict, strict=strict)

    def label_names(self) -> Optional[List[str]]:
        """The labels logit ``i`` stands for, where the output is over labels (NER, RE); else None."""
        return None

    def hf_export(self, state: Dict[str, torch.Tensor]) -> Tuple[str, Dict[str, torch.Tensor], Dict]:
        """What an export to Hugging Face writes besides the encoder (:mod:`biomegatron_nemo.export.hf`):
        the ``transformers`` class name, the heads' tensors (from the layout-free ``state``) under
        its names, and config entries."""
        raise NotImplementedError(f"{type(self).__name__} has no Hugging Face counterpart")

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["nonfinite_skipped"] = self._nonfinite_skipped

    def on_load_checkpoint(self, checkpoint) -> None:
        """Resume with an uninterrupted run's step bookkeeping (:func:`~.checkpoints.training.complete_saved_batch`)."""
        complete_saved_batch(checkpoint)
        self._nonfinite_skipped = int(checkpoint.get("nonfinite_skipped", 0))

    def save_to(self, save_path: str):
        """NeMo's ``save_to`` with the layout-free connector (a model NeMo's own ``restore_from``
        returned carries NeMo's default one, which would write this rank's shards)."""
        if not isinstance(self._save_restore_connector, LayoutFreeSaveRestoreConnector):
            self._save_restore_connector = LayoutFreeSaveRestoreConnector()
        return super().save_to(save_path)

    @classmethod
    def restore_from(cls, restore_path: str, *args, save_restore_connector=None, **kwargs):
        """NeMo's ``restore_from`` with the layout-free, weights-only connector by default: in any
        tensor/pipeline layout; a missing, truncated or foreign file is an error naming it."""
        weights.check_nemo_file(str(restore_path))
        if save_restore_connector is None:
            save_restore_connector = LayoutFreeSaveRestoreConnector()
        return super().restore_from(restore_path, *args, save_restore_connector=save_restore_connector, **kwargs)

    @classmethod
    def list_available_models(cls) -> List:
        """NVIDIA's BioMegatron checkpoints on NGC (:func:`~biomegatron_nemo.checkpoints.ngc.ngc_checkpoints`)."""
        from biomegatron_nemo.checkpoints.ngc import ngc_checkpoints

        return ngc_checkpoints(cls)

    # ------------------------------------------------------------------ data
    def setup_training_data(self, train_data_config):
        self._train_dl = self._build_split(train_data_config, "train_ds", "train")

    def setup_validation_data(self, val_data_config):
        self._validation_dl = self._build_split(val_data_config, "validation_ds", "validation")

    def setup_test_data(self, test_data_config):
        self._test_dl = self._build_split(test_data_config, "test_ds", "test")

    def _build_split(self, data_config, section: str, split: str):
        typed = self.config_section(section, data_config) if data_config else None
        return self.build_dataloader(typed, split) if typed is not None else None

    def build_dataloader(self, data_config, split: str):
        """Subclasses return a ``DataLoader`` for ``split`` from its typed section (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} does not define {split} data")
