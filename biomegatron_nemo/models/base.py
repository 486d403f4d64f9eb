"""``BioMegatronModelPT``: the NeMo ``ModelPT`` lifecycle every BioMegatron task model shares.

It owns only the lifecycle around the encoder:

* the config, checked against the model's schema (:attr:`config_class`) before anything is built;
* the tokenizer, built from ``cfg.tokenizer`` with its files ``register_artifact``-ed so the
  ``.nemo`` carries them;
* the megatron-core encoder and the heads, built for this rank's tensor/pipeline position — in
  ``__init__`` when there is no trainer (inference, ``restore_from``), else in Lightning's
  ``configure_model()`` hook, which runs after the strategy has set up ``parallel_state``;
* training / validation / test steps, on one stage or through the pipeline
  (:mod:`biomegatron_nemo.parallel.pipeline`), and the optimiser through NeMo's ``optim`` config
  with weight decay off for biases and LayerNorm weights (BERT's recipe);
* layout-free ``.nemo`` files, and the pretrained checkpoint a config names
  (``language_model.pretrained``), which decides the architecture and vocabulary
  (:mod:`~biomegatron_nemo.models.from_pretrained`) and initialises the weights;
* numerical faults: a NaN or inf gradient norm (what a NaN/inf loss also produces) stops the run
  at that step or skips the update (``on_nonfinite``), decided alike on every rank.

Extension points (what the task models — pretraining, NER, relation extraction, QA — implement):

``config_class``
    The model's schema: a :class:`~biomegatron_nemo.models.config.BioMegatronModelConfig`
    subclass with its own sections (head, loss, data), each a dataclass next to its code.
``build_heads()``
    Create the task heads (``self.encoder`` exists). Under pipeline parallelism only the last
    stage (``self.encoder.post_process``) builds them.
``loss_normalizers(batch)``
    Whole-batch counts that turn summed losses into means (e.g. labelled tokens), computed once
    per batch so pipeline microbatches sum to the unsplit batch's loss; use
    :meth:`data_parallel_normalizer` so DP=N equals DP=1.
``head_forward(hidden, batch, normalizers)``
    The heads on the last stage's ``[b, s, h]`` hidden states → a
    :class:`~biomegatron_nemo.models.outputs.HeadOutput` (named losses + logits), returned and
    passed on, never stored on ``self``.
``build_dataloader(data_cfg, split)``
    The data module: a ``DataLoader`` for ``train`` / ``validation`` / ``test``.
``on_eval_output(split, batch, output)``
    Metric collection after each validation/test step, with the heads' output for the whole
    batch (under pipeline parallelism on the last stage only; other stages are not called).
    Reduce in ``on_validation_epoch_end`` / ``on_test_epoch_end``, gathering over all ranks.
``weight_layout()``
    Which tensors are vocabulary-sized or tied copies (default: the word embeddings); a model
    whose heads add such tensors extends it.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple, Type

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, open_dict

from nemo.core.classes import ModelPT
from nemo.core.classes.common import ALLOWED_TARGET_PREFIXES

from biomegatron_nemo.checkpoints import weights
from biomegatron_nemo.checkpoints.nemo_connector import LayoutFreeSaveRestoreConnector
from biomegatron_nemo.checkpoints.training import complete_saved_batch
from biomegatron_nemo.common.config import NEMO_MANAGED_KEYS, to_plain, validate_config
from biomegatron_nemo.common.logs import quiet_nemo
from biomegatron_nemo.encoder.config import EncoderConfig
from biomegatron_nemo.models.config import BioMegatronModelConfig, nemo_optim_config
from biomegatron_nemo.models.from_pretrained import apply_pretrained, pretrained_checkpoint
from biomegatron_nemo.models.outputs import HeadOutput
from biomegatron_nemo.tokenizers import DEFAULT_LIBRARY, LIBRARIES, BioTokenizer, build_tokenizer

log = logging.getLogger(__name__)

# NeMo 3.0 refuses to instantiate `target:` classes outside an allow-list when restoring.
if "biomegatron_nemo." not in ALLOWED_TARGET_PREFIXES:
    ALLOWED_TARGET_PREFIXES.append("biomegatron_nemo.")


class BioMegatronModelPT(ModelPT):
    """Tokenizer + megatron-core encoder + NeMo lifecycle; task heads come from subclasses."""

    config_class: Type[BioMegatronModelConfig] = BioMegatronModelConfig
    #: the output layer of a head shares the word-embedding matrix (a class-level declaration:
    #: every pipeline rank must agree whether to join the embedding-group collectives)
    ties_output_to_embeddings = False

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        cfg = validate_config(cfg, self.config_class, where=type(self).__name__, passthrough=NEMO_MANAGED_KEYS)
        if not self._is_model_being_restored():  # a restored config is complete; its checkpoint may be far away
            cfg = apply_pretrained(cfg, where=type(self).__name__)
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

    # ------------------------------------------------------------------ construction
    def _setup_tokenizer(self) -> BioTokenizer:
        # Register the tokenizer's file first: register_artifact returns the path to read — the
        # user's file when training, the copy inside the unpacked .nemo when restoring.
        key = LIBRARIES[self.cfg.tokenizer.library or DEFAULT_LIBRARY]
        if self.cfg.tokenizer.get(key):
            resolved = self.register_artifact(f"tokenizer.{key}", self.cfg.tokenizer[key])
            with open_dict(self.cfg):
                self.cfg.tokenizer[key] = resolved
        return build_tokenizer(self.cfg.tokenizer)

    @property
    def encoder_config(self) -> EncoderConfig:
        values = to_plain(self.cfg.encoder)
        given = values.get("vocab_size")
        if given is not None and given != self.tokenizer.vocab_size:
            raise ValueError(f"encoder.vocab_size={given} but the tokenizer has {self.tokenizer.vocab_size} "
                             "entries; leave encoder.vocab_size null (it follows the tokenizer)")
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
            initialize_megatron(1, 1, seed=int(self.cfg.seed))
        else:
            torch.manual_seed(int(self.cfg.seed))
        self.encoder = build_encoder(self.encoder_config)
        self.build_heads()
        self._modules_built = True
        checkpoint = None if self._being_restored else pretrained_checkpoint(self.cfg)
        if checkpoint is not None:
            # tokens the tokenizer adds after its vocabulary file (e.g. entity markers) may be
            # new to the pretrained encoder: their embedding rows are added
            appended = [self.tokenizer.special_ids[t] for t in self.tokenizer.extra_special_tokens]
            full = checkpoint.weights()
            heads = {} if self.cfg.init_heads else self.pretrained_head_weights(full)
            prefixes = ("",) if self.cfg.init_heads else ("encoder.", *heads)
            weights.load_encoder_weights(self, self.weight_layout(), {**full, **heads}, checkpoint.source,
                                         prefixes=prefixes, appended_ids=appended, seed=int(self.cfg.seed),
                                         init_std=self.encoder_config.init_method_std)

    def build_heads(self) -> None:
        """Subclasses create their task heads here (see the module docstring)."""

    def pretrained_head_weights(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Head weights this model takes from a pretrained checkpoint's layout-free ``state`` (under
        this model's names) besides the encoder; by default none: a task's head starts from random."""
        return {}

    # ------------------------------------------------------------------ losses
    def loss_normalizers(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """Whole-batch counts that turn summed losses into means (see the module docstring)."""
        raise NotImplementedError

    @staticmethod
    def data_parallel_normalizer(local_count: float) -> float:
        """Global count over the data-parallel group, divided by its size.

        DDP averages gradients over data-parallel ranks; a rank loss of ``local_sum / this``
        therefore averages to ``global_sum / global_count`` — exactly the loss of the global
        batch, however unevenly the counted items (e.g. masked tokens) fall across ranks.
        """
        from megatron.core import parallel_state

        if not parallel_state.model_parallel_is_initialized() or parallel_state.get_data_parallel_world_size() == 1:
            return max(local_count, 1.0)
        total = torch.tensor([float(local_count)], dtype=torch.float64)
        torch.distributed.all_reduce(total, group=parallel_state.get_data_parallel_group())
        return max(float(total.item()), 1.0) / parallel_state.get_data_parallel_world_size()

    def head_forward(self, hidden: torch.Tensor, batch: Dict[str, torch.Tensor],
                     normalizers: Dict[str, float]) -> HeadOutput:
        """Losses and head outputs from the last stage's ``[b, s, h]`` hidden states."""
        raise NotImplementedError

    def encode(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``[b, s, h]`` hidden states of a batch (no pipeline parallelism)."""
        return self.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def forward_batch(self, batch: Dict[str, torch.Tensor]) -> HeadOutput:
        """Encoder and heads on one batch (no pipeline parallelism)."""
        return self.head_forward(self.encode(batch), batch, self.loss_normalizers(batch))

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

            object.__setattr__(self, "_pipeline_runner", PipelineRunner(self, self.cfg.pipeline.num_microbatches))
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
        seed_everything_model_parallel(int(self.cfg.seed) + 100 * stage + self.trainer.global_step)

    def training_step(self, batch, batch_idx):
        if self.pipeline_parallel:
            from biomegatron_nemo.parallel.pipeline import pipeline_training_step

            loss = pipeline_training_step(self, self.pipeline_runner, batch)
            self.log("train_loss", loss, prog_bar=True)
            return loss
        output = self.forward_batch(batch)
        self.log_output("train", output, batch)
        return output.loss

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
            output = self.forward_batch(batch)
            loss = output.loss
            self.log_output(split, output, batch)
        if output is not None:
            self.on_eval_output(split, batch, output)
        return loss

    def log_output(self, split: str, output: HeadOutput, batch) -> None:
        """Log the total loss and, when there are several, each named one."""
        sync = split != "train"
        self.log(f"{split}_loss", output.loss, prog_bar=True, sync_dist=sync)
        if len(output.losses) > 1:
            for name, value in output.losses.items():
                self.log(f"{split}_{name}_loss", value, sync_dist=sync)

    def on_eval_output(self, split: str, batch, output: HeadOutput) -> None:
        """Metric collection hook (see the module docstring); the base collects nothing."""

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Before every optimizer step (Lightning calls this hook on each one, clipping or not): the
        norm of the whole model's gradient, across tensor and pipeline ranks, computed once, both
        guards against NaN/inf (``on_nonfinite``) and clips by ``gradient_clip_val``."""
        if gradient_clip_val and gradient_clip_algorithm not in (None, "norm"):
            raise ValueError(f"gradient_clip_algorithm={gradient_clip_algorithm!r}: only 'norm' is supported")
        from biomegatron_nemo.parallel.grad_clip import model_parallel_grad_norm

        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = model_parallel_grad_norm(params)
        if not bool(torch.isfinite(norm)):
            self._on_nonfinite_gradients(params, float(norm))
        elif gradient_clip_val:
            torch.nn.utils.clip_grads_with_norm_(params, float(gradient_clip_val), norm, foreach=True)

    def _on_nonfinite_gradients(self, params, norm: float) -> None:
        """``on_nonfinite=error``: a ``FloatingPointError`` naming the step; ``skip``: the gradients
        are dropped, so the optimizer leaves every weight as it is. The norm is taken after the
        data-parallel reduction and over all model-parallel ranks, so every rank decides alike (a
        rank raising alone would leave the others waiting in a collective)."""
        step = self.trainer.global_step + 1 if self._trainer is not None else None
        if self.cfg.get("on_nonfinite", "error") == "error":
            raise FloatingPointError(
                f"step {step}: the gradient norm is {norm} (a NaN or inf loss or gradient); the run stops "
                "before this update. Lower the learning rate or check this step's batch; "
                "model.on_nonfinite=skip drops such updates instead")
        for p in params:
            p.grad = None
        self._nonfinite_skipped += 1
        log.warning(f"step {step}: the gradient norm is {norm}; this update was skipped "
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
        return super().setup_optimization(nemo_optim_config(optim_config or self.cfg.optim), optim_kwargs)

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

    def hf_export(self, state: Dict[str, torch.Tensor]) -> Tuple[str, Dict[str, torch.Tensor], Dict]:
        """What :meth:`export_hf` writes besides the encoder: the ``transformers`` class name, the
        heads' tensors (from the layout-free ``state``) under its names, and config entries."""
        raise NotImplementedError(f"{type(self).__name__} has no Hugging Face counterpart")

    def export_hf(self, out_dir: str) -> List[str]:
        """This model as a Hugging Face folder ``transformers`` loads without this library
        (weights, config, tokenizer files); returns the summary lines."""
        from biomegatron_nemo.checkpoints.hf import write_hf

        state = self.layout_free_state_dict()
        hf_class, heads, extra = self.hf_export(state)
        return write_hf(self, out_dir, hf_class, state, heads, extra)

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["nonfinite_skipped"] = self._nonfinite_skipped

    def on_load_checkpoint(self, checkpoint) -> None:
        """Resume with the step bookkeeping of an uninterrupted run (see
        :func:`~biomegatron_nemo.checkpoints.training.complete_saved_batch`)."""
        complete_saved_batch(checkpoint)
        self._nonfinite_skipped = int(checkpoint.get("nonfinite_skipped", 0))

    @classmethod
    def restore_from(cls, restore_path: str, *args, save_restore_connector=None, **kwargs):
        """NeMo's ``restore_from`` with the layout-free, weights-only connector by default.

        Works in a process whose tensor/pipeline layout differs from the one that saved. A missing,
        truncated or foreign file is an error naming it (not a ``tarfile`` error from deep inside).
        """
        weights.check_nemo_file(str(restore_path))
        if save_restore_connector is None:
            save_restore_connector = LayoutFreeSaveRestoreConnector()
        return super().restore_from(restore_path, *args, save_restore_connector=save_restore_connector, **kwargs)

    @classmethod
    def list_available_models(cls) -> List:
        """NVIDIA's BioMegatron checkpoints on NGC, with the command that converts each into a
        ``.nemo`` of this library (nothing is downloaded: NGC needs an account and its CLI).

        They are Megatron-LM checkpoints (``release/mp_rank_00/model_optim_rng.pt``) without a
        vocabulary; NGC ships the vocabulary next to them. ``docs/checkpoints.md`` walks through it.
        """
        from nemo.core.classes.common import PretrainedModelInfo

        convert = ("python -m biomegatron_nemo.checkpoints.convert --from megatron-lm --to nemo {folder} "
                   "biomegatron.nemo --vocab-file {vocab}")
        entries = [("biomegatron345muncased", "BioMegatron-345m (Megatron-LM checkpoint), uncased vocabulary"),
                   ("biomegatron345mcased", "BioMegatron-345m (Megatron-LM checkpoint), cased vocabulary")]
        return [PretrainedModelInfo(pretrained_model_name=name, class_=cls,
                                    location=f"https://catalog.ngc.nvidia.com/orgs/nvidia/models/{name}",
                                    description=f"{text}. Download it with the NGC CLI, then convert with the "
                                                "vocabulary file NGC lists with it: "
                                                + convert.format(folder=f"{name}/", vocab="VOCAB.txt"))
                for name, text in entries]

    # ------------------------------------------------------------------ data
    def setup_training_data(self, train_data_config):
        self._train_dl = self.build_dataloader(train_data_config, "train") if train_data_config else None

    def setup_validation_data(self, val_data_config):
        self._validation_dl = self.build_dataloader(val_data_config, "validation") if val_data_config else None

    def setup_test_data(self, test_data_config):
        self._test_dl = self.build_dataloader(test_data_config, "test") if test_data_config else None

    def build_dataloader(self, data_config, split: str):
        """Subclasses return a ``DataLoader`` for ``split`` (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} does not define {split} data")
