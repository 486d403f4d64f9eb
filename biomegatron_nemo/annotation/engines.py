"""How annotation runs a model's forward: PyTorch at fp32 (the model itself) or bf16, or ONNX
Runtime on the model's ONNX export, at fp32 or with int8 dynamic quantisation.

Each engine is a callable with the model's ``forward`` arguments that returns the model's own
output type, so the model's one inference loop (length-sorted batches, windows, decoding) runs
unchanged around it (:meth:`~biomegatron_nemo.models.finetuning.FineTuningModel.infer`).

* ``precision="bf16"``: the forward under ``torch.autocast`` in bfloat16 (matrix products in bf16,
  LayerNorm and softmax in fp32), on a GPU with bf16 or a CPU with AVX512-BF16 or AMX; the logits
  come back as fp32.
* ``backend="onnxruntime"``: the model exported as in ``biomegatron export-onnx`` (the same graph,
  into a temporary folder), run by an ONNX Runtime session with as many threads as PyTorch uses.
* ``quantize="int8"``: ONNX Runtime's dynamic quantisation of that export (int8 weights of every
  matrix product with a scale per output channel, activations quantised per batch), for CPU
  serving. PyTorch's own dynamic
  quantisation replaces ``torch.nn.Linear`` only, and megatron-core's layers are not that class,
  so int8 goes through ONNX Runtime.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

PRECISIONS = ("fp32", "bf16")
BACKENDS = ("torch", "onnxruntime")
QUANTIZATIONS = ("none", "int8")


@dataclass(frozen=True)
class EngineSettings:
    """How the models run: ``precision``, ``backend`` and ``quantize`` (module doc)."""

    precision: str = "fp32"
    backend: str = "torch"
    quantize: str = "none"

    def __post_init__(self):
        for name, allowed in (("precision", PRECISIONS), ("backend", BACKENDS), ("quantize", QUANTIZATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        if self.quantize == "int8" and self.backend != "onnxruntime":
            raise ValueError("quantize=int8 is ONNX Runtime's dynamic quantisation: add backend=onnxruntime "
                             "(--backend onnxruntime)")
        if self.backend == "onnxruntime" and self.precision != "fp32":
            raise ValueError("backend=onnxruntime runs the fp32 ONNX export: leave precision=fp32 (--precision); "
                             "quantize=int8 (--quantize int8) is ONNX Runtime's faster option")


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products natively (a GPU with bf16; a CPU with
    AVX512-BF16 or AMX, which oneDNN uses); elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Bf16Forward:
    """The model's forward under bf16 autocast, its output tensors as fp32."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.device_type = next(model.parameters()).device.type

    def __call__(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            output = self.model(*args, **kwargs)
        return type(output)(**{k: v.float() for k, v in output.tensors().items()})


def onnxruntime_forward(model: torch.nn.Module, quantize: str, folder: Path, threads: int):
    """The model's ONNX export (int8-quantised when asked) in an ONNX Runtime session, on the CPU."""
    from biomegatron_nemo.export.onnx import OnnxRuntimeModel, export_onnx, probe_output

    path = folder / "model.onnx"
    export_onnx(model, path)
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = folder / "model.int8.onnx"
        root = logging.getLogger()  # quantize_dynamic advises pre-processing on the root logger, each call
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            # per output channel: one scale per row of each weight keeps BC5CDR-chem dev F1 within
            # 0.2 point of fp32, where one scale per tensor lost 0.9 (docs/benchmarks.md)
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        path = quantized
    return OnnxRuntimeModel(path, type(probe_output(model)), threads)


def make_forward(model: torch.nn.Module, settings: EngineSettings, folder: Path) -> Optional[Callable]:
    """The callable that runs ``model`` as ``settings`` say (None: the model itself); ONNX files
    go to ``folder``."""
    if settings.backend == "onnxruntime":
        return onnxruntime_forward(model, settings.quantize, Path(folder), torch.get_num_threads())
    if settings.precision == "bf16":
        device = next(model.parameters()).device
        if not bf16_supported(device):
            raise ValueError(f"precision=bf16: this {device.type.upper()} has no native bf16 (a GPU with bf16, or a "
                             "CPU with AVX512-BF16 or AMX); bf16 would be emulated and slower than fp32")
        return Bf16Forward(model)
    return None


class Engines:
    """One forward per model for a run, and the temporary folder their ONNX files live in."""

    def __init__(self, models, settings: EngineSettings):
        self._folder = tempfile.TemporaryDirectory(prefix="biomegatron-annotate-") \
            if settings.backend == "onnxruntime" else None
        self.forwards = [make_forward(model, settings, Path(self._folder.name) / str(number) if self._folder else None)
                         for number, model in enumerate(models)]
