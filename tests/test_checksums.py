"""Every tensor of a .nemo and of a training checkpoint carries a checksum: a flipped byte is
refused, naming the file and the tensor; files written before checksums load with a warning."""

from __future__ import annotations

import logging
import struct
import tarfile
import zipfile

import pytest
import torch

from biomegatron_nemo.checkpoints.checksums import (CHECKPOINT_KEY, CHECKSUMS_FILE, checkpoint_checksums, crc32,
                                                    tensor_checksums)
from biomegatron_nemo.checkpoints.training import AtomicCheckpointIO
from biomegatron_nemo.common.errors import DataFormatError
from helpers.models import pretraining_config

WEIGHTS = "model_weights.ckpt"


def _largest_entry(archive: bytes):
    """(offset, size) of the bytes of the largest stored member of a torch zip archive."""
    import io

    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED
    name_length, extra_length = struct.unpack("<HH", archive[info.header_offset + 26: info.header_offset + 30])
    return info.header_offset + 30 + name_length + extra_length, info.file_size


def _flip_one_byte(path, start: int, archive: bytes):
    offset, size = _largest_entry(archive)
    data = bytearray(path.read_bytes())
    data[start + offset + size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _changed_tensor(before, after, prefix=""):
    changed = [place for place, value in tensor_checksums(after).items() if tensor_checksums(before)[place] != value]
    assert len(changed) == 1, changed
    return changed[0]


def test_crc32_of_tensors_is_zlibs_over_their_bytes():
    import zlib

    values = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert crc32(values) == f"{zlib.crc32(values.numpy().tobytes()):08x}"
    assert crc32(values.t()) == f"{zlib.crc32(values.t().contiguous().numpy().tobytes()):08x}"  # element order
    assert crc32(values.bfloat16()) != crc32(values.half())  # the bytes, not the values
    assert tensor_checksums({"a": values, "b": [values[0], {"c": values[1]}], "n": 3}) == {
        "a": crc32(values), "b/0": crc32(values[0]), "b/1/c": crc32(values[1])}


def test_a_nemo_with_one_flipped_weight_byte_is_refused_naming_the_tensor(tmp_path, tiny_vocab, megatron_single):
    from nemo.core import ModelPT

    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    model = BioMegatronPretrainingModel(pretraining_config(tiny_vocab))
    good = tmp_path / "model.nemo"
    model.save_to(str(good))
    bad = tmp_path / "flipped.nemo"
    bad.write_bytes(good.read_bytes())
    with tarfile.open(good) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(WEIGHTS))
        assert any(m.name.endswith(CHECKSUMS_FILE) for m in tar.getmembers())
        archive = tar.extractfile(member).read()
    _flip_one_byte(bad, member.offset_data, archive)
    with tarfile.open(bad) as tar:  # the tar itself is intact: only the tensor's bytes changed
        flipped = torch.load(tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith(WEIGHTS))),
                             weights_only=True)
    tensor = _changed_tensor(model.layout_free_state_dict(), flipped)
    expected = rf"^{bad}: \[{WEIGHTS}\] tensor {tensor} does not match the checksum written with it"
    with pytest.raises(DataFormatError, match=expected):
        ModelPT.restore_from(str(bad))  # NeMo's own call
    with pytest.raises(DataFormatError, match=expected):  # as a pretrained checkpoint or init_from
        from biomegatron_nemo.checkpoints.weights import read_nemo_weights

        read_nemo_weights(str(bad))
    BioMegatronPretrainingModel.restore_from(str(good))  # the good copy verifies


def test_a_nemo_written_before_checksums_loads_with_a_warning(tmp_path, tiny_vocab, megatron_single, caplog):
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    model = BioMegatronPretrainingModel(pretraining_config(tiny_vocab))
    model.save_to(str(tmp_path / "model.nemo"))
    folder = tmp_path / "unpacked"
    with tarfile.open(tmp_path / "model.nemo") as tar:
        tar.extractall(folder, filter="data")
    (folder / CHECKSUMS_FILE).unlink()
    old = tmp_path / "old.nemo"
    with tarfile.open(old, "w:") as tar:
        tar.add(folder, arcname=".")
    with caplog.at_level(logging.WARNING, logger="biomegatron_nemo.checkpoints.checksums"):
        restored = BioMegatronPretrainingModel.restore_from(str(old))
    assert f"{old}: {WEIGHTS} was written without checksums (by an earlier version); it loads unverified" \
        in caplog.text
    torch.testing.assert_close(restored.layout_free_state_dict(), model.layout_free_state_dict(), rtol=0, atol=0)


def test_a_training_checkpoint_with_one_flipped_byte_is_refused_naming_the_tensor(tmp_path, caplog):
    io = AtomicCheckpointIO()
    generator = torch.Generator().manual_seed(0)
    checkpoint = {"global_step": 7, "state_dict": {"encoder.w": torch.randn(64, 64, generator=generator),
                                                    "head.b": torch.randn(8, generator=generator)},
                  "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(256, 256, generator=generator)}}}]}
    good = tmp_path / "good.ckpt"
    io.save_checkpoint(dict(checkpoint), good)
    loaded = io.load_checkpoint(good)
    assert CHECKPOINT_KEY not in loaded and loaded["global_step"] == 7
    torch.testing.assert_close(loaded["optimizer_states"], checkpoint["optimizer_states"], rtol=0, atol=0)

    bad = tmp_path / "flipped.ckpt"
    bad.write_bytes(good.read_bytes())
    _flip_one_byte(bad, 0, good.read_bytes())  # the largest tensor: the Adam moment
    with pytest.raises(DataFormatError, match=rf"^{bad}: \[the training checkpoint\] tensor "
                                              r"optimizer_states/0/state/0/exp_avg does not match the checksum"):
        io.load_checkpoint(bad)

    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)  # as written before checksums
    with caplog.at_level(logging.WARNING, logger="biomegatron_nemo.checkpoints.checksums"):
        assert io.load_checkpoint(old)["global_step"] == 7
    assert f"{old}: the training checkpoint was written without checksums" in caplog.text
    assert checkpoint_checksums(checkpoint)["tensors"].keys() == {
        "state_dict/encoder.w", "state_dict/head.b", "optimizer_states/0/state/0/exp_avg"}
