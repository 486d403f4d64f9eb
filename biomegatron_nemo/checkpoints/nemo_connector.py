"""``.nemo`` save/restore that is independent of the parallel layout and never unpickles code.

NeMo's ``SaveRestoreConnector`` runs on global rank 0 only and writes that rank's
``state_dict()`` — with TP=2 a ``.nemo`` silently holds half of every partitioned weight. This
connector gathers the layout-free state dict on every rank first (a collective; see
:mod:`biomegatron_nemo.checkpoints.layout`), then lets NeMo's connector write it on rank 0 with
its usual packing of config and artifacts. Restoring cuts the layout-free weights for the
restoring rank's layout, so a ``.nemo`` saved at TP=2 restores at TP=1 and the reverse.

Weights are read with ``torch.load(weights_only=True)``: loading a checkpoint never runs pickled
code from it. Each tensor's checksum is written beside the weights and verified on restore
(:mod:`~biomegatron_nemo.checkpoints.checksums`): a corrupted ``.nemo`` is refused, naming the tensor. The archive is written atomically (:func:`~biomegatron_nemo.common.atomic.atomic_write`):
a run killed while saving leaves the previous ``.nemo`` intact, never a truncated one.

A ``.nemo`` that cannot be restored is named in the error, not NeMo's temporary folder: a
``model_config.yaml`` that is not YAML, or fails the model's schema, is a
:class:`~biomegatron_nemo.common.errors.ConfigError` naming the file (and the YAML line or the
key); weights that do not fit the model the config describes, or cannot be read, are a
:class:`~biomegatron_nemo.common.errors.DataFormatError` naming the file and the tensors.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import zipfile
from typing import Dict, Iterator

import torch
import torch.distributed as dist
import yaml
from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

from biomegatron_nemo.checkpoints.checksums import load_weights, save_weights
from biomegatron_nemo.checkpoints.weights import WEIGHTS_FILE
from biomegatron_nemo.common.atomic import atomic_write
from biomegatron_nemo.common.errors import ConfigError, DataFormatError

CONFIG_FILE = "model_config.yaml"


class LayoutFreeSaveRestoreConnector(SaveRestoreConnector):
    """NeMo connector for :class:`~biomegatron_nemo.models.base.BioMegatronModelPT` models."""

    def save_to(self, model, save_path: str):
        full_state = model.layout_free_state_dict()  # collective on all ranks
        with _state_dict_override(model, full_state):
            result = super().save_to(model, save_path)  # writes on global rank 0 only
        if dist.is_initialized():
            dist.barrier()
        return result

    def restore_from(self, calling_cls, restore_path: str, override_config_path=None, *args, **kwargs):
        self._restore_path = os.fspath(restore_path)
        config = (os.fspath(override_config_path) if isinstance(override_config_path, (str, os.PathLike))
                  else f"{restore_path} ({CONFIG_FILE})")
        try:
            return super().restore_from(calling_cls, restore_path, override_config_path, *args, **kwargs)
        except (yaml.YAMLError, UnicodeDecodeError) as err:  # from NeMo's OmegaConf.load of the config
            raise _yaml_error(err, config) from None
        except ConfigError as err:  # the model's schema check of that config
            where = f"{config}: {err.where}" if err.where else config
            raise ConfigError(err.reason, key=err.key, where=where) from None

    def load_instance_with_state_dict(self, instance, state_dict, strict):
        try:
            instance.load_layout_free_state_dict(state_dict, strict=strict)
        except ValueError as err:  # missing, unused or misshapen tensors, each named in err
            raise DataFormatError(self._restore_path, None, "the weights do not fit the model its "
                                  f"{CONFIG_FILE} describes: {err}", field=WEIGHTS_FILE) from None
        instance._set_model_restore_state(is_being_restored=False)  # as NeMo's connector does

    def _inject_model_parallel_rank_for_ckpt(self, dirname, basename):
        # NeMo expects one weights file per model-parallel rank; ours is a single layout-free one.
        return os.path.join(dirname, basename)

    @staticmethod
    def _make_nemo_file_from_folder(filename, source_dir):
        # NeMo's tars straight into the final name: a kill mid-way left a truncated .nemo there
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)

        def pack(f):
            with tarfile.open(fileobj=f, mode="w:") as tar:
                tar.add(source_dir, arcname=".")

        atomic_write(filename, pack)

    @staticmethod
    def _save_state_dict_to_disk(state_dict, filepath):
        save_weights(state_dict, filepath)  # and the checksum of every tensor beside it

    def _load_state_dict_from_disk(self, model_weights, map_location="cpu"):
        source = getattr(self, "_restore_path", model_weights)
        # torch.save writes a zip archive; anything else would reach the unpickler as garbage
        if not zipfile.is_zipfile(model_weights):
            raise DataFormatError(source, None, "not a torch checkpoint: no zip archive, as torch.save "
                                  "writes (truncated, or another file?)", field=WEIGHTS_FILE)
        try:
            return load_weights(model_weights, source=source, what=WEIGHTS_FILE, map_location=map_location)
        except (RuntimeError, EOFError) as err:  # a garbled archive; a refused pickle stays UnpicklingError
            reason = str(err).split(". ")[0]  # torch appends a paragraph of advice
            raise DataFormatError(source, None, f"cannot read the weights (corrupt?): {reason}",
                                  field=WEIGHTS_FILE) from None


def _yaml_error(err: Exception, config: str) -> ConfigError:
    """A config file that does not decode or parse, as a ConfigError naming it and the line."""
    if isinstance(err, UnicodeDecodeError):
        return ConfigError(f"not UTF-8 text (byte offset {err.start}); save it as UTF-8", where=config)
    mark = getattr(err, "problem_mark", None)
    line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    reason = getattr(err, "problem", None) or str(err).splitlines()[0]
    return ConfigError(f"not valid YAML{line}: {reason}", where=config)


@contextlib.contextmanager
def _state_dict_override(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Iterator[None]:
    """Make ``model.state_dict()`` return ``state`` (NeMo's connector writes what it returns)."""
    model.state_dict = lambda *args, **kwargs: state  # instance attribute shadows the method
    try:
        yield
    finally:
        del model.state_dict
