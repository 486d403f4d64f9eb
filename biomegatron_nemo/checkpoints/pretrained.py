"""A pretrained checkpoint named by its path: what kind it is, which encoder and vocabulary it
holds, and its weights in this library's layout — converted once, then cached by content.

Kinds, told apart by their files (:func:`detect_kind`):

``nemo``         a ``.nemo`` of this library (read in place, nothing converted);
``nemo1``        a NeMo 1.x ``.nemo`` (MegatronBert, BioMegatron, their task models);
``hf``           a Hugging Face folder: ``config.json`` of a ``BertModel``, ``BertFor*`` or ``MegatronBert*``;
``megatron-lm``  a Megatron-LM checkpoint folder (NGC's BioMegatron) or one ``.pt`` file.

:func:`convert_checkpoint` turns the last three into layout-free weights, the encoder's
architecture and the tokenizer section; :func:`resolve_pretrained` does the same through a cache
(``$BIOMEGATRON_CACHE``, else ``~/.cache/biomegatron_nemo``) keyed by a digest of the files read,
so a second run converts nothing. A cache entry is written to a temporary folder and renamed into
place, so processes converting the same checkpoint at once (ranks of one job) never see half an
entry. Deleting the cache is always safe.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import yaml

from biomegatron_nemo.checkpoints.checksums import load_weights, save_weights
from biomegatron_nemo.checkpoints.megatron_lm import ImportedWeights
from biomegatron_nemo.encoder.config import ARCHITECTURE_KEYS, EncoderConfig

KINDS = ("nemo", "nemo1", "hf", "megatron-lm")
#: bump when converted entries change, so old cache entries are not reused
CACHE_FORMAT = "3"
ENTRY_FILE = "pretrained.yaml"
WEIGHTS_FILE = "model_weights.ckpt"
_MEGATRON_MARKERS = ("latest_checkpointed_iteration.txt", "release")


def cache_root() -> Path:
    """Where converted checkpoints are kept: ``$BIOMEGATRON_CACHE``, else ``$XDG_CACHE_HOME`` or
    ``~/.cache``, under ``biomegatron_nemo``."""
    if os.environ.get("BIOMEGATRON_CACHE"):
        return Path(os.environ["BIOMEGATRON_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "biomegatron_nemo"


def _nemo_target(path: Path) -> str:
    """The ``target`` class of a ``.nemo``'s config (a readable tar with ``model_config.yaml``)."""
    try:
        with tarfile.open(path) as tar:
            member = next((m for m in tar.getmembers() if m.isfile() and Path(m.name).name == "model_config.yaml"),
                          None)
            if member is None:
                raise ValueError(f"{path}: a tar archive without model_config.yaml, not a .nemo file")
            config = yaml.safe_load(tar.extractfile(member)) or {}
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable .nemo file (a tar archive): {err}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: its model_config.yaml is not YAML ({str(err).splitlines()[0]})") from None
    return str(config.get("target") or "") if isinstance(config, dict) else ""


def detect_kind(path) -> str:
    """Which of :data:`KINDS` ``path`` is, from its files; an error saying what was expected otherwise."""
    path = Path(path)
    expected = ("expected a .nemo file, a Hugging Face folder (config.json with the weights), or a "
                "Megatron-LM checkpoint (a folder with latest_checkpointed_iteration.txt, release/ or "
                "iter_NNNNNNN/ holding mp_rank_XX/model_optim_rng.pt)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; {expected}")
    if path.is_file():
        if tarfile.is_tarfile(path):
            return "nemo" if _nemo_target(path).startswith("biomegatron_nemo.") else "nemo1"
        if path.suffix == ".pt":
            return "megatron-lm"
        hint = " (a zip archive: unpack it and name the folder)" if path.suffix == ".zip" else ""
        raise ValueError(f"{path}: not a checkpoint this library reads{hint}; {expected}")
    if (path / "config.json").is_file():
        return "hf"
    names = {p.name for p in path.iterdir()}
    if names & set(_MEGATRON_MARKERS) or any(n.startswith(("iter_", "mp_rank_")) for n in names):
        return "megatron-lm"
    raise ValueError(f"{path}: a folder that is no checkpoint this library reads; {expected}")


def _source_files(kind: str, path: Path) -> List[Path]:
    """The files whose bytes decide a conversion (what the cache digest covers)."""
    if path.is_file():
        return [path]
    if kind == "hf":  # not the TensorFlow / Flax / ONNX copies a published folder may also hold
        from biomegatron_nemo.checkpoints.hf import CONFIG_FILES, weight_files

        return [path / n for n in CONFIG_FILES if (path / n).is_file()] + weight_files(path)
    from biomegatron_nemo.checkpoints.megatron_lm import shard_files

    marker = path / "latest_checkpointed_iteration.txt"
    return ([marker] if marker.is_file() else []) + shard_files(path)


def _digest(kind: str, path: Path, inputs: Tuple) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{CACHE_FORMAT}|{kind}|{inputs!r}".encode())
    for file in _source_files(kind, path):
        h.update(f"|{file.relative_to(path) if file != path else file.name}|".encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


@dataclass
class Converted:
    """One checkpoint in this library's terms (what :func:`convert_checkpoint` returns)."""

    state: Dict[str, torch.Tensor]  #: layout-free weights, vocabulary rows cut to the tokenizer's size
    encoder: Dict[str, Any]  #: every key of :data:`ARCHITECTURE_KEYS`, and the dropout rates the source gives
    tokenizer: Dict[str, Any]  #: the tokenizer section: library, vocab_file, cased (None: the source does not say)
    binary_head: bool
    summary: List[str] = field(default_factory=list)


def convert_checkpoint(kind: str, path, workdir, vocab_file: Optional[str] = None, cased: Optional[bool] = None,
                       num_attention_heads: Optional[int] = None, encoder_only: bool = False) -> Converted:
    """A ``nemo1``, ``hf`` or ``megatron-lm`` checkpoint → :class:`Converted`; its vocabulary file
    is copied into ``workdir``. ``vocab_file`` replaces the checkpoint's (a Megatron-LM checkpoint
    holds none), ``cased`` its casing; ``encoder_only`` leaves out every head of the source."""
    from biomegatron_nemo.checkpoints.megatron_legacy import cut_vocabulary
    from biomegatron_nemo.tokenizers import WordPieceTokenizer

    path, workdir = Path(path), Path(workdir)
    imported, found = _read(kind, path, workdir, vocab_file, num_attention_heads)
    vocab = Path(vocab_file) if vocab_file else found
    if vocab is None:
        raise FileNotFoundError(f"{path}: the checkpoint holds no vocabulary and none lies beside it (vocab.txt); "
                                "give the vocabulary file (model.tokenizer.vocab_file, or --vocab-file)")
    if not vocab.is_file():
        raise FileNotFoundError(f"{vocab}: the vocabulary file does not exist")
    local = workdir / "vocab.txt"
    if vocab.resolve() != local.resolve():
        shutil.copyfile(vocab, local)
    size = WordPieceTokenizer(str(local)).vocab_size  # the file plus any BERT special it lacks
    state = dict(imported.state)
    rows = cut_vocabulary(state, size, str(path))
    summary = list(imported.summary) + [f"vocabulary: {size} of {rows} embedding rows kept (the rest is padding)"]
    if encoder_only:
        heads = sorted({k.split(".")[0] for k in state if not k.startswith("encoder.")})
        state = {k: v for k, v in state.items() if k.startswith("encoder.")}
        if heads:
            summary.append(f"left out (encoder only): {', '.join(heads)}")
    declared = cased if cased is not None else imported.cased
    encoder = EncoderConfig.from_dict({k: v for k, v in imported.encoder.items() if k in ARCHITECTURE_KEYS})
    # the source's dropout rates go into a converted .nemo; a model started from it chooses its own
    dropout = {k: v for k, v in imported.encoder.items() if k in ("hidden_dropout", "attention_dropout")}
    return Converted(state, {**{k: getattr(encoder, k) for k in ARCHITECTURE_KEYS}, **dropout},
                     {"library": "wordpiece", "vocab_file": str(local), "cased": declared},
                     "binary_head.classifier.weight" in state, summary)


def _read(kind: str, path: Path, workdir: Path, vocab_file: Optional[str], heads: Optional[int]
          ) -> Tuple[ImportedWeights, Optional[Path]]:
    if kind == "megatron-lm":
        from biomegatron_nemo.checkpoints.megatron_lm import read_megatron_lm

        return read_megatron_lm(path, heads), None if vocab_file else _vocab_beside(path)
    if kind == "nemo1":
        from biomegatron_nemo.checkpoints.nemo1 import read_nemo1

        imported, vocab, _ = read_nemo1(path, workdir)
        return imported, vocab
    if kind == "hf":
        from biomegatron_nemo.checkpoints.hf import read_hf

        return read_hf(path, workdir, vocab_file)
    raise ValueError(f"{path}: a {kind!r} checkpoint is not converted; kinds converted: nemo1, hf, megatron-lm")


def _vocab_beside(path: Path) -> Optional[Path]:
    """NGC ships a Megatron-LM checkpoint's ``vocab.txt`` next to it (inside its folder or beside it)."""
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "vocab.txt", folder.parent / "vocab.txt"):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """What a model needs from the checkpoint that starts it (see :func:`resolve_pretrained`)."""

    kind: str
    source: str  #: the path the user named
    encoder: Dict[str, Any]  #: the architecture, every key of :data:`ARCHITECTURE_KEYS`
    tokenizer: Dict[str, Any]  #: library, vocab_file or model_file (a real file), cased, special_tokens
    weights_file: str  #: the .nemo itself, or the converted weights in the cache
    summary: Tuple[str, ...] = ()
    #: the casing was read from the vocabulary, as the checkpoint does not say it (a user's setting wins)
    cased_from_vocabulary: bool = False

    def weights(self) -> Dict[str, torch.Tensor]:
        """The layout-free weights (read weights-only: no pickled code runs)."""
        from biomegatron_nemo.checkpoints.weights import read_nemo_weights

        if self.kind == "nemo":
            return read_nemo_weights(self.weights_file)
        return load_weights(self.weights_file)


_MEMO: Dict[Tuple, PretrainedCheckpoint] = {}


def resolve_pretrained(path, vocab_file: Optional[str] = None,
                       num_attention_heads: Optional[int] = None) -> PretrainedCheckpoint:
    """The checkpoint at ``path`` (any of :data:`KINDS`), converted through the cache when it is
    not a ``.nemo`` of this library. The other arguments matter for Megatron-LM checkpoints only,
    which hold no vocabulary (else one lying beside them is used) and may lack the number of heads.

    Within a process the first resolution of a checkpoint is kept (a model built after the run
    layer resolved its config finds it again, whatever that config now says)."""
    path = Path(path).expanduser()
    kind = detect_kind(path)
    megatron = kind == "megatron-lm"
    vocab = _file_hash(vocab_file) if megatron and vocab_file else None
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in _source_files(kind, path))
    key = (kind, str(path.resolve()), vocab, stamp)
    if key not in _MEMO:
        if kind == "nemo":
            _MEMO[key] = _own_nemo(path, _digest(kind, path, ()))
        else:
            heads = num_attention_heads if megatron else None
            _MEMO[key] = _cached_conversion(kind, path, _digest(kind, path, (vocab, heads)),
                                            vocab_file if megatron else None, heads)
    return _MEMO[key]


def _file_hash(path) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: the vocabulary file does not exist")
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


def _entry(entry: Path, kind: str, source: Path) -> PretrainedCheckpoint:
    data = yaml.safe_load((entry / ENTRY_FILE).read_text(encoding="utf-8"))
    tokenizer = dict(data["tokenizer"])
    for key in ("vocab_file", "model_file"):
        if tokenizer.get(key):
            tokenizer[key] = str(entry / tokenizer[key])
    weights = source if kind == "nemo" else entry / WEIGHTS_FILE
    inferred = tokenizer.get("library") == "wordpiece" and tokenizer.get("cased") is None
    if inferred:
        from biomegatron_nemo.tokenizers.wordpiece import looks_cased

        tokenizer["cased"] = looks_cased(tokenizer["vocab_file"])
    return PretrainedCheckpoint(kind, str(source), dict(data["encoder"]), tokenizer, str(weights),
                                tuple(data.get("summary") or ()), inferred)


def _publish(tmp: Path, entry: Path) -> None:
    """Rename a finished entry into place; another process may have been first (then keep its)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; a cache may be shared
    try:
        os.rename(tmp, entry)
    except OSError:
        if not (entry / ENTRY_FILE).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _cached_conversion(kind: str, path: Path, digest: str, vocab_file, heads) -> PretrainedCheckpoint:
    entry = cache_root() / "pretrained" / f"{kind}-{digest}"
    if not (entry / ENTRY_FILE).is_file():
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=entry.parent))
        try:
            converted = convert_checkpoint(kind, path, tmp, vocab_file, num_attention_heads=heads)
            save_weights(converted.state, tmp / WEIGHTS_FILE)
            tokenizer = dict(converted.tokenizer, vocab_file="vocab.txt", special_tokens=[])
            summary = converted.summary + [f"converted once into {entry}"]
            (tmp / ENTRY_FILE).write_text(yaml.safe_dump({"kind": kind, "source": str(path), "encoder": converted.encoder,
                                                          "tokenizer": tokenizer, "summary": summary}), encoding="utf-8")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, entry)
    return _entry(entry, kind, path)


def _own_nemo(path: Path, digest: str) -> PretrainedCheckpoint:
    """A ``.nemo`` of this library: its config's encoder and tokenizer; the vocabulary file is
    extracted into the cache (the model being built registers it into its own ``.nemo``)."""
    from biomegatron_nemo.checkpoints.weights import check_nemo_file
    from biomegatron_nemo.tokenizers import LIBRARIES

    entry = cache_root() / "pretrained" / f"nemo-{digest}"
    if not (entry / ENTRY_FILE).is_file():
        check_nemo_file(str(path))
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=entry.parent))
        try:
            with tarfile.open(path) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                config = yaml.safe_load(tar.extractfile(members["model_config.yaml"])) or {}
                tokenizer = dict(config.get("tokenizer") or {})
                library = tokenizer.get("library") or "wordpiece"
                file_key = LIBRARIES[library]
                name = Path(str(tokenizer.get(file_key) or "").removeprefix("nemo:")).name
                if name not in members:
                    raise ValueError(f"{path}: its config names the tokenizer file {tokenizer.get(file_key)!r}, "
                                     "which the archive does not hold")
                (tmp / name).write_bytes(tar.extractfile(members[name]).read())
            encoder = EncoderConfig.from_dict({k: v for k, v in (config.get("encoder") or {}).items()
                                               if k != "vocab_size"})
            section = {"library": library, file_key: name, "special_tokens": list(tokenizer.get("special_tokens") or []),
                       "cased": None if library == "sentencepiece" else bool(tokenizer.get("cased"))}
            summary = [f"this library's .nemo {path} ({config.get('target', '?').rsplit('.', 1)[-1]})"]
            (tmp / ENTRY_FILE).write_text(yaml.safe_dump({"kind": "nemo", "source": str(path), "summary": summary,
                                                          "encoder": {k: getattr(encoder, k) for k in ARCHITECTURE_KEYS},
                                                          "tokenizer": section}), encoding="utf-8")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, entry)
    return _entry(entry, "nemo", path)
