"""The config sections every BioMegatron model shares, and the base model schema.

:class:`BioMegatronModelConfig` is the ``model:`` section common to all models: seed, tokenizer,
encoder, where pretrained weights come from, optimiser and pipeline settings. Each model extends
it with its own sections (heads, loss, data) in its module, next to its code. The optimiser
section is NeMo's ``optim`` config (NeMo builds optimiser and scheduler from it); here it is typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from biomegatron_nemo.common.config import Schema, option, section, to_plain
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.encoder.config import EncoderConfig
from biomegatron_nemo.parallel.pipeline import PipelineConfig
from biomegatron_nemo.tokenizers import TokenizerConfig

#: Optimisers and LR schedules this schema accepts: NeMo's registries, by name.
OPTIMIZERS = ("adamw", "adam", "sgd", "adafactor", "novograd", "rmsprop", "adagrad", "adamax", "adadelta")
# torch's optimisers with a fused implementation (one kernel for the whole update: on a 2-core CPU
# about 4x faster than foreach for Adam, a few per cent of a fine-tuning step)
FUSED_OPTIMIZERS = ("adamw", "adam", "sgd", "adagrad")
SCHEDULERS = ("CosineAnnealing", "WarmupAnnealing", "WarmupPolicy", "WarmupHoldPolicy", "SquareRootAnnealing",
              "PolynomialDecayAnnealing", "InverseSquareRootAnnealing", "NoamAnnealing")


@dataclass
class SchedulerConfig(Schema):
    """``optim.sched``: NeMo's learning-rate schedule, stepped every optimiser step."""

    name: str = option("CosineAnnealing", "NeMo scheduler", choices=SCHEDULERS)
    warmup_ratio: Optional[float] = option(0.1, "share of the steps spent warming up")
    warmup_steps: Optional[int] = option(None, "warm-up steps; when set, replaces warmup_ratio")
    hold_steps: Optional[int] = option(None, "WarmupHoldPolicy: steps at the peak after warm-up (or hold_ratio)")
    hold_ratio: Optional[float] = option(None, "WarmupHoldPolicy: share of the steps at the peak")
    min_lr: float = option(1e-5, "learning rate at the end of the decay")

    def check(self) -> None:
        holds = self.hold_steps is not None or self.hold_ratio is not None
        if holds and self.name != "WarmupHoldPolicy":
            raise ConfigError(f"applies to WarmupHoldPolicy, not {self.name}", key="hold_steps")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.warmup_ratio}", key="warmup_ratio")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"must be >= 0, got {self.warmup_steps}", key="warmup_steps")
        if self.min_lr < 0:
            raise ConfigError(f"must be >= 0, got {self.min_lr}", key="min_lr")


@dataclass
class OptimConfig(Schema):
    """``optim``: the optimiser NeMo builds (weight decay is never applied to biases and norms)."""

    name: str = option("adamw", "NeMo optimiser", choices=OPTIMIZERS)
    lr: float = option(1e-4, "peak learning rate")
    weight_decay: float = option(0.01, "decoupled weight decay of the weight matrices")
    betas: Optional[List[float]] = option(None, "Adam-family betas; null: [0.9, 0.999]")
    eps: Optional[float] = option(None, "Adam-family epsilon; null: the optimiser's (1e-8)")
    momentum: Optional[float] = option(None, "SGD momentum (optimisers without it: leave null)")
    foreach: Optional[bool] = option(True, "one multi-tensor update (torch picks the slow per-tensor "
                                           "loop on CPU when left null); used where the update is not fused")
    fused: Optional[bool] = option(None, "one fused kernel per update, on CPU and GPU; null: fused for "
                                         f"{', '.join(FUSED_OPTIMIZERS)}, the foreach update otherwise")
    sched: Optional[SchedulerConfig] = section(SchedulerConfig, "learning-rate schedule; null: constant")

    def check(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"must be > 0, got {self.lr}", key="lr")
        if self.weight_decay < 0:
            raise ConfigError(f"must be >= 0, got {self.weight_decay}", key="weight_decay")
        if self.betas is not None and (len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas)):
            raise ConfigError(f"must be two numbers in [0, 1), got {self.betas}", key="betas")
        if self.fused and self.name not in FUSED_OPTIMIZERS:
            raise ConfigError(f"{self.name} has no fused implementation (those with one: "
                              f"{', '.join(FUSED_OPTIMIZERS)}); set it to null or false", key="fused")


def nemo_optim_config(optim: Any) -> Dict[str, Any]:
    """The ``optim`` section as NeMo's ``setup_optimization`` takes it: unset (null) keys left out,
    so each optimiser and scheduler keeps its own default for them."""

    def drop_none(values):
        return {k: drop_none(v) if isinstance(v, dict) else v for k, v in values.items() if v is not None}

    values = drop_none(to_plain(optim))
    fused = values.pop("fused", None)
    if fused is None:
        fused = values.get("name", "adamw") in FUSED_OPTIMIZERS
    if fused:  # torch refuses foreach and fused together
        values.pop("foreach", None)
        values["fused"] = True
    sched = values.get("sched") or {}
    if "warmup_steps" in sched:  # NeMo refuses both; warmup_steps is the explicit choice
        sched.pop("warmup_ratio", None)
    return values


@dataclass
class LanguageModelConfig(Schema):
    """``language_model``: the pretrained encoder a model starts from (NeMo 1.x's section name)."""

    pretrained: Optional[str] = option(None, "a pretrained checkpoint: a .nemo of this library or of NeMo 1.x, a "
                                             "Hugging Face BERT folder, or a Megatron-LM checkpoint. It decides the "
                                             "encoder's architecture and the vocabulary (docs/pretrained.md); "
                                             "converted once and cached. null: random initialisation")
    nemo_file: Optional[str] = option(None, "the same as pretrained (NeMo 1.x's key)")


@dataclass
class BioMegatronModelConfig(Schema):
    """The ``model:`` keys every BioMegatron model has."""

    seed: int = option(1234, "seed of the weight initialisation")
    tokenizer: TokenizerConfig = section(TokenizerConfig, "the vocabulary")
    encoder: EncoderConfig = section(EncoderConfig, "encoder size and regularisation")
    init_from: Optional[str] = option(None, "the same as language_model.pretrained (the name used for "
                                            "continued pretraining, paper Table 6)")
    language_model: LanguageModelConfig = section(LanguageModelConfig, "pretrained encoder (fine-tuning)")
    init_heads: bool = option(False, "with init_from / language_model.nemo_file: initialise the task heads "
                                     "from it too (same task and sizes, e.g. BioASQ after SQuAD)")
    optim: OptimConfig = section(OptimConfig, "optimiser and learning-rate schedule")
    pipeline: PipelineConfig = section(PipelineConfig, "pipeline-parallel schedule")
    on_nonfinite: str = option("error", "a NaN or inf loss or gradient: error = stop at that step, naming it; "
                                        "skip = drop that batch's update, warn and count it "
                                        "(train_nonfinite_skipped)", choices=("error", "skip"))

    def check(self) -> None:
        named = [key for key, value in PRETRAINED_KEYS.items() if value(self)]
        if len(named) > 1:
            raise ConfigError(f"{' and '.join(named)} each name a pretrained checkpoint; give one", key=named[1])
        if self.init_heads and not named:
            raise ConfigError("needs a pretrained checkpoint (language_model.pretrained)", key="init_heads")


#: the keys that name the pretrained checkpoint (one at most), each read from the model's config
PRETRAINED_KEYS = {"language_model.pretrained": lambda cfg: cfg.language_model.pretrained,
                   "language_model.nemo_file": lambda cfg: cfg.language_model.nemo_file,
                   "init_from": lambda cfg: cfg.init_from}


def pretrained_path(cfg: Any) -> Optional[str]:
    """The pretrained checkpoint a model config names (under any of :data:`PRETRAINED_KEYS`), if any."""
    return next((str(get(cfg)) for get in PRETRAINED_KEYS.values() if get(cfg)), None)
