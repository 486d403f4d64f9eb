"""ONNX export of a task model (encoder + head), for serving without PyTorch.

    python -m biomegatron_nemo.export.onnx ner.nemo ner.onnx [--opset 17] [--check]

This module owns the exported graph's contract and the command that writes it:

* the inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 ``[batch, sequence]``,
  both axes dynamic) and the outputs: the tensors of the model's typed output
  (:mod:`biomegatron_nemo.models.outputs`), named and with the dynamic axes that type declares;
* the export wrapper (:class:`ExportedTaskModel`): the model's own ``forward`` in eval mode, fp32,
  at TP=PP=1 — nothing re-implemented, so the graph is the model's forward;
* the metadata a server needs to read the logits without PyTorch (``metadata_props``: task, model
  class, labels, vocabulary size, maximum sequence length, special token ids, library version);
* restoring a ``.nemo`` for export (:func:`export_nemo_to_onnx`) and the ``export-onnx`` command,
  whose ``--check`` compares onnxruntime's outputs with PyTorch's on a batch of another shape.

What the graph outputs, its task and its labels come from the model's ``forward`` and its
``label_names()``, never from its class or attribute names; the class to restore comes from the
``.nemo``'s own ``target`` (restricted to this library's models).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch


INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: the tolerance ``--check`` holds onnxruntime to (the acceptance bound of the export)
CHECK_TOLERANCE = 1e-4
#: protobuf cannot serialise a message over 2 GiB: larger models keep their weights in a side file
PROTOBUF_LIMIT = 2 ** 31 - 1
MISSING_ONNX = "ONNX export needs onnx and onnxruntime: pip install 'biomegatron_nemo[onnx]'"
#: the .nemo classes this exporter restores (a .nemo's ``target`` names a class to import)
MODEL_PREFIX = "biomegatron_nemo.models."


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"{MISSING_ONNX} ({err})") from err


def _drop_empty_extra_state(module, state_dict, prefix, local_metadata) -> None:
    # megatron-core's parallel linears report None as their `_extra_state` (the slot Transformer
    # Engine keeps fp8 metadata in). The TorchScript tracer passes every state-dict value to the
    # graph as an input and fails on None ("'NoneType' object has no attribute 'detach'").
    for key in [k for k, v in state_dict.items() if k.startswith(prefix) and v is None]:
        del state_dict[key]


class ExportedTaskModel(torch.nn.Module):
    """``(input_ids, attention_mask, token_type_ids)`` → the tensors of the model's ``forward``
    output a server reads (``export_tensors``), as a tuple in its field order."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        # only this wrapper's state dict (what the tracer reads) loses the empty entries
        self.register_state_dict_post_hook(_drop_empty_extra_state)

    def forward(self, input_ids, attention_mask, token_type_ids):
        return tuple(self.model(input_ids, attention_mask, token_type_ids).export_tensors().values())


def probe_output(model: torch.nn.Module):
    """The model's typed output on a sample batch: which tensors the graph has, and its task."""
    with torch.no_grad():
        return model(**sample_inputs(model))


def check_exportable(model: torch.nn.Module) -> None:
    """A clear error unless ``model`` can export: one process layout (TP=PP=1), the whole encoder
    with its heads, fp32 weights, no Transformer Engine modules."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        tp = parallel_state.get_tensor_model_parallel_world_size()
        pp = parallel_state.get_pipeline_model_parallel_world_size()
        if (tp, pp) != (1, 1):
            raise ValueError(f"ONNX export runs at tensor/pipeline parallel size 1, this process has TP={tp} PP={pp}: "
                             "save the model to a .nemo and export that in one process (the .nemo is layout-free)")
    from biomegatron_nemo.models.base import BioMegatronModelPT

    if not isinstance(model, BioMegatronModelPT):
        raise ValueError(f"ONNX export takes a model of this library, got {type(model).__name__}")
    if not (model.encoder.pre_process and model.encoder.post_process):
        raise ValueError("ONNX export needs the whole encoder (first and last pipeline stage) in one model")
    wrong = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    if wrong:
        raise ValueError(f"ONNX export writes fp32; this model has {', '.join(wrong)} weights (call model.float())")
    te = sorted({type(m).__name__ for m in model.modules() if type(m).__module__.startswith("transformer_engine")})
    if te:
        raise ValueError(f"Transformer Engine modules ({', '.join(te)}) do not export; restore with "
                         "encoder.layer_spec=portable (export_nemo_to_onnx does)")


def sample_inputs(model: torch.nn.Module, batch_size: int = 2, seq_len: int = 8,
                  seed: int = 0) -> Dict[str, torch.Tensor]:
    """A batch of random non-special ids, its last row padded from the middle (pad ids, mask 0),
    two token types: what the exporter traces and ``--check`` runs."""
    tokenizer = model.tokenizer
    seq_len = min(seq_len, int(model.encoder.encoder_config.max_position_embeddings))
    specials = set(tokenizer.special_ids.values())
    ordinary = torch.tensor([i for i in range(tokenizer.vocab_size) if i not in specials])
    g = torch.Generator().manual_seed(seed)
    ids = ordinary[torch.randint(len(ordinary), (batch_size, seq_len), generator=g)]
    ids[:, 0] = tokenizer.cls_id
    mask = torch.ones_like(ids)
    mask[-1, max(2, seq_len // 2):] = 0
    ids[mask == 0] = tokenizer.pad_id
    types = torch.zeros_like(ids)
    types[:, seq_len // 2:] = 1
    device = next(model.parameters()).device
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "token_type_ids": types.to(device)}


def metadata(model: torch.nn.Module, output) -> Dict[str, str]:
    """The ``metadata_props`` of the exported file (strings; lists and maps as JSON), for
    ``output``, the model's typed output."""
    from biomegatron_nemo import __version__

    tokenizer = model.tokenizer
    props = {
        "task": output.task,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "outputs": json.dumps(list(output.export_tensors())),
        "vocab_size": str(tokenizer.vocab_size),
        "max_sequence_length": str(model.encoder.encoder_config.max_position_embeddings),
        "tokenizer": json.dumps({"library": model.config.tokenizer.kind, "cased": model.config.tokenizer.cased}),
        "special_ids": json.dumps(dict(tokenizer.special_ids)),
        "biomegatron_nemo_version": __version__,
    }
    labels = model.label_names()
    if labels is not None:
        props["labels"] = json.dumps(list(labels))  # logit index i is labels[i]
    return props


def _write(onnx, proto, out_path: Path, external_data: Optional[bool]) -> None:
    from biomegatron_nemo.common.atomic import atomic_write

    if external_data is None:
        external_data = proto.ByteSize() > PROTOBUF_LIMIT
    if not external_data:
        atomic_write(out_path, lambda f: f.write(proto.SerializeToString()))
        return
    # weights in one side file next to the graph (ONNX's external data, found by relative name);
    # the side file goes in place first, so a complete graph never points at a partial one
    data_name = out_path.name + ".data"
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        onnx.save_model(proto, os.path.join(tmp, out_path.name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        os.replace(os.path.join(tmp, data_name), out_path.parent / data_name)
        os.replace(os.path.join(tmp, out_path.name), out_path)


def _declare_unread_inputs(onnx, proto) -> None:
    """The tracer drops inputs the graph never reads: ``token_type_ids`` of an encoder without
    token-type embeddings (``num_tokentypes: 0``). Declared again (and ignored), every exported
    model takes the same three inputs, so a server feeds all models alike."""
    present = [i.name for i in proto.graph.input]
    for position, name in enumerate(INPUTS):
        if name not in present:
            declared = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, ["batch", "sequence"])
            proto.graph.input.insert(position, declared)
            present.insert(position, name)


def export_onnx(model: torch.nn.Module, out_path, opset: int = 17, external_data: Optional[bool] = None) -> Dict:
    """Write ``model`` (a task model of this library, TP=PP=1) as an ONNX file at ``out_path``.

    The weights go in the file itself unless it would pass protobuf's 2 GiB limit (the 1.2b
    encoder) or ``external_data=True``: then they are in ``<out_path>.data`` next to it. Returns
    a summary: path, inputs, outputs, labels (classification models), opset.
    """
    onnx = _import("onnx")
    if opset < 14:  # torch exports scaled_dot_product_attention (the portable attention) from opset 14
        raise ValueError(f"ONNX export needs opset 14 or later (attention), got {opset}")
    check_exportable(model)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportedTaskModel(model)
    was_training = model.training
    model.eval()  # no dropout in the graph
    try:
        output = probe_output(model)
        names = list(output.export_tensors())
        axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
        axes.update({name: dict(enumerate(type(output).axes[name])) for name in names})
        example = sample_inputs(model)
        device = example["input_ids"].device.type
        with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp, torch.no_grad(), \
                torch.autocast(device, enabled=False), warnings.catch_warnings():  # fp32, whatever the caller runs
            # The TorchScript exporter (dynamo=False), deprecated since torch 2.9 but still shipped:
            # the dynamo exporter also gives our outputs (tried: 1.8e-7 on NER, torch 2.13) but needs
            # onnxscript, which the `onnx` extra does not install, and takes ~40x longer on the tiny
            # test models. Tracing sees one path through the model: eval mode, the padding mask
            # (`attention_mask < 0.5`) and SDPA's boolean mask trace to ONNX ops with dynamic shapes.
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            raw = os.path.join(tmp, "model.onnx")
            torch.onnx.export(wrapper, tuple(example[name] for name in INPUTS), raw, dynamo=False,
                              opset_version=opset, input_names=list(INPUTS), output_names=names, dynamic_axes=axes)
            proto = onnx.load(raw)  # with any side files the exporter wrote for a > 2 GiB model
        _declare_unread_inputs(onnx, proto)
        props = metadata(model, output)
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"biomegatron_nemo {props['model_class']} ({props['task']}); outputs {names}"
        _write(onnx, proto, out_path, external_data)
    finally:
        model.train(was_training)
    onnx.checker.check_model(str(out_path))  # by path: also for a model with external data
    return {"path": str(out_path), "inputs": list(INPUTS), "outputs": names,
            "labels": json.loads(props["labels"]) if "labels" in props else None, "opset": opset}


def read_nemo_config(nemo_path) -> Dict:
    """The ``model_config.yaml`` of a ``.nemo`` (read as YAML data, nothing instantiated)."""
    import yaml

    from biomegatron_nemo.checkpoints.weights import check_nemo_file

    check_nemo_file(str(nemo_path))  # a tar holding model_config.yaml, or an error naming the file
    with tarfile.open(nemo_path) as tar:
        member = next(m for m in tar.getmembers() if os.path.basename(m.name) == "model_config.yaml")
        try:
            cfg = yaml.safe_load(tar.extractfile(member).read().decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"{nemo_path}: its model_config.yaml is not YAML: {err}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{nemo_path}: its model_config.yaml is not a mapping")
    return cfg


def restore_for_export(nemo_path):
    """The ``.nemo``'s model on the CPU, with the ``portable`` layer spec (``auto``/``local`` hold the
    same weights; ``local``'s attention is CUDA-only and Transformer Engine's modules do not export)."""
    from omegaconf import OmegaConf

    from biomegatron_nemo.models.base import BioMegatronModelPT

    cfg = read_nemo_config(nemo_path)
    target = str(cfg.get("target", ""))
    if not target.startswith(MODEL_PREFIX):
        raise ValueError(f"{nemo_path}: its config's target {target!r} is not a model of this library "
                         f"({MODEL_PREFIX}...); only those are restored")
    encoder = cfg.setdefault("encoder", {})
    if encoder.get("layer_spec", "auto") in ("auto", "local"):
        encoder["layer_spec"] = "portable"
    return BioMegatronModelPT.restore_from(str(nemo_path), override_config_path=OmegaConf.create(cfg),
                                           map_location=torch.device("cpu")).eval()


def export_nemo_to_onnx(nemo_path, out_path, opset: int = 17, external_data: Optional[bool] = None) -> Dict:
    """Restore a ``.nemo`` of this library and :func:`export_onnx` it."""
    return export_onnx(restore_for_export(nemo_path), out_path, opset=opset, external_data=external_data)


class OnnxRuntimeModel:
    """An exported file run by ONNX Runtime on the CPU, called as the model's ``forward`` is:
    tensors in, the model's output type (``output_type``) out. ``threads``: ONNX Runtime's
    intra-op threads (its default: every core)."""

    def __init__(self, onnx_path, output_type: type, threads: Optional[int] = None):
        ort = _import("onnxruntime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.output_type = output_type
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feeds = dict(zip(INPUTS, (input_ids, attention_mask, token_type_ids)))
        outputs = self.session.run(self.output_names, {k: v.cpu().numpy() for k, v in feeds.items()})
        return self.output_type(**{name: torch.from_numpy(v) for name, v in zip(self.output_names, outputs)})


def compare_with_onnxruntime(model: torch.nn.Module, onnx_path, batch_size: int = 3, seq_len: int = 11
                             ) -> Dict[str, float]:
    """Max abs difference per output between onnxruntime on ``onnx_path`` and ``model`` in PyTorch,
    on a padded batch of another shape than the exporter traced (the dynamic axes are exercised);
    per-position outputs are compared at the batch's real tokens."""
    batch = sample_inputs(model, batch_size, seq_len, seed=1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ours = model(**batch)
    finally:
        model.train(was_training)
    theirs = OnnxRuntimeModel(onnx_path, type(ours))(**batch).export_tensors()
    output_type, ours = type(ours), ours.export_tensors()
    real = batch["attention_mask"].bool().cpu()

    def compared(name: str, values: torch.Tensor) -> torch.Tensor:
        return values[real] if output_type.per_position(name) else values

    return {name: float((compared(name, theirs[name]) - compared(name, ours[name].cpu())).abs().max())
            for name in theirs}


def parse_args(argv=None, prog=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog or "python -m biomegatron_nemo.export.onnx",
        description="Export a task model's .nemo (NER, relation extraction, QA, masked LM) as an ONNX file that "
                    "onnxruntime serves without PyTorch: inputs input_ids, attention_mask, token_type_ids (int64, "
                    "dynamic batch and sequence), the head's logits as outputs, labels in the metadata.",
        epilog="example: %(prog)s ner.nemo ner.onnx --check")
    p.add_argument("model", help="the .nemo of a model of this library")
    p.add_argument("output", help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--check", action="store_true",
                   help=f"run onnxruntime on a sample batch and print the max abs difference against PyTorch "
                        f"(exit 1 above {CHECK_TOLERANCE:g})")
    return p.parse_args(argv)


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    try:
        model = restore_for_export(args.model)
        summary = export_onnx(model, args.output, opset=args.opset)
        print(f"written: {summary['path']} (opset {summary['opset']})")
        print(f"inputs: {', '.join(summary['inputs'])}; outputs: {', '.join(summary['outputs'])}")
        if summary["labels"]:
            print(f"labels: {', '.join(summary['labels'])}")
        diffs = compare_with_onnxruntime(model, args.output) if args.check else {}
    except (ValueError, FileNotFoundError, ImportError) as err:  # ConfigError / DataFormatError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, diff in diffs.items():
        print(f"check: {name} max abs difference onnxruntime vs PyTorch {diff:.3g}")
    if diffs and max(diffs.values()) > CHECK_TOLERANCE:
        print(f"error: onnxruntime differs from PyTorch by more than {CHECK_TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
