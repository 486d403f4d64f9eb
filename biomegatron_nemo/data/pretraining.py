"""Masked-LM pretraining data: megatron-core's BERT dataset over preprocessed corpora, and batches.

This module owns the second half of pretraining data (the first half, corpus → ``.bin/.idx``, is
:mod:`biomegatron_nemo.data.preprocess`): building train/valid/test
``BERTMaskedWordPieceDataset`` splits through megatron-core's ``BlendedMegatronDatasetBuilder``
(several corpora blended with weights, one split string, on-disk sample-index cache), and
turning megatron's sample dicts into the batch the pretraining model consumes. Masking,
sentence packing, truncation and the sentence-order targets are megatron-core's, not ours.

Data config (a mapping or ``DictConfig``; defaults follow Megatron-LM's ``pretrain_bert.py``)::

    data_prefix: [0.7, /data/pubmed_abs, 0.3, /data/pmc]   # or [prefix, ...] or "prefix"
    split: "949,50,1"            # train,valid,test shares of each corpus's documents
    seq_length: 128              # [CLS] A [SEP] B [SEP] + padding
    masked_lm_prob: 0.15         # of the tokens; 80% [MASK], 10% random token, 10% unchanged
    short_seq_prob: 0.1          # samples deliberately shorter than seq_length
    whole_word_masking: true     # mask all sub-tokens of a word together (## continuations)
    max_ngram: 3                 # mask n-grams of up to 3 words (P(n) ∝ 1/n); 1 = BERT
    binary_head: true            # sentence-order targets (segments swapped with p = 0.5)
    seed: 1234                   # fixes sample order, masking and swaps
    path_to_cache: null          # sample-index cache; null = "<prefix>/cache/" beside the data
    # dataloader only (build_pretraining_dataloader):
    micro_batch_size: 8
    num_samples: null            # samples of this split; required for validation/test,
                                 # train defaults to trainer.max_steps x global batch
    num_workers: 0
    consumed_samples: 0          # resume: start the loader at this sample (see below)

Batch contract (:class:`PretrainingCollator`; every tensor ``[b, s]`` unless noted, s =
``seq_length``):

==========================  ======  ==========================================================
key                         dtype   meaning
==========================  ======  ==========================================================
``input_ids``               long    token ids after masking: ``[CLS] A [SEP] B [SEP]``, then the
                                    tokenizer's pad id
``token_type_ids``          long    0 for [CLS], segment A and its [SEP]; 1 for segment B and
                                    the final [SEP]; 0 on padding
``attention_mask``          long    1 on real tokens (up to and including the final [SEP]),
                                    0 on padding
``lm_labels``               long    the original token id where a token was selected for
                                    prediction, ``-100`` everywhere else
``loss_mask``               float   1.0 exactly where ``lm_labels != -100``
``sentence_order_labels``   long    ``[b]``: 1 when segments A and B were swapped, else 0
                                    (always 0 when ``binary_head`` is off)
==========================  ======  ==========================================================

The MLM loss is cross-entropy over positions with ``loss_mask == 1`` (about 15% of the real
tokens, fewer when ``seq_length`` bounds the count), normalised by ``loss_mask.sum()``.

Two megatron-core quirks handled here: its ``padding_mask`` marks any position whose token
equals the pad id as padding, including a real token that the 10% random replacement turned
into ``[PAD]``, so ``attention_mask`` is taken from the final ``[SEP]`` instead; and its
``types`` are padded with the pad id, not 0.

megatron-core builds the sample index on rank 0 and shares it through a barrier, so
``torch.distributed`` must be initialised (a one-process ``gloo`` group is enough:
:func:`biomegatron_nemo.parallel.state.initialize_megatron`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from biomegatron_nemo.data.collate import IGNORE_INDEX

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": 0, "training": 0, "validation": 1, "valid": 1, "val": 1, "test": 2}

DEFAULTS: Dict[str, Any] = {
    "split": "949,50,1",
    "seq_length": 128,
    "masked_lm_prob": 0.15,
    "short_seq_prob": 0.1,
    "whole_word_masking": True,
    "max_ngram": 3,
    "binary_head": True,
    "seed": 1234,
    "path_to_cache": None,
}


def _as_dict(cfg: Any) -> Dict[str, Any]:
    if isinstance(cfg, Mapping):
        return dict(cfg)
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    raise TypeError(f"pretraining data config must be a mapping, got {type(cfg).__name__}")


def _blend(data_prefix: Any) -> Tuple[List[str], Optional[List[float]]]:
    """``data_prefix`` in Megatron-LM's ``--data-path`` form → megatron-core's blend tuple."""
    from megatron.core.datasets.utils import get_blend_from_list

    if data_prefix is None or data_prefix == [] or data_prefix == "":
        raise ValueError("pretraining data config needs data_prefix (a preprocessed PREFIX, or "
                         "[weight, PREFIX, weight, PREFIX, ...])")
    items = [data_prefix] if isinstance(data_prefix, (str, os.PathLike)) else list(data_prefix)
    prefixes, weights = get_blend_from_list([os.fspath(i) if isinstance(i, os.PathLike) else str(i)
                                             for i in items])
    for prefix in prefixes:
        missing = [prefix + s for s in (".bin", ".idx") if not os.path.isfile(prefix + s)]
        if missing:
            raise FileNotFoundError(
                f"data_prefix {prefix!r}: {', '.join(missing)} not found (build it with "
                "python -m biomegatron_nemo.data.preprocess --output-prefix PREFIX ...)")
    if weights is not None and any(w <= 0 for w in weights):
        raise ValueError(f"data_prefix weights must be positive, got {weights}")
    return prefixes, weights


def make_dataset_config(cfg: Any, tokenizer) -> "BERTMaskedWordPieceDatasetConfig":  # noqa: F821
    """megatron-core's ``BERTMaskedWordPieceDatasetConfig`` from our data config (see module doc)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Transformer Engine and Apex")
        from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDatasetConfig

    values = {**DEFAULTS, **_as_dict(cfg)}
    if not 0.0 < float(values["masked_lm_prob"]) < 1.0:
        raise ValueError(f"masked_lm_prob must be in (0, 1), got {values['masked_lm_prob']}")
    if int(values["seq_length"]) < 8:
        raise ValueError(f"seq_length must be at least 8, got {values['seq_length']}")
    return BERTMaskedWordPieceDatasetConfig(
        random_seed=int(values["seed"]),
        sequence_length=int(values["seq_length"]),
        blend=_blend(values.get("data_prefix")),
        split=str(values["split"]),
        path_to_cache=values["path_to_cache"],
        tokenizer=tokenizer,  # a BioTokenizer has megatron-core's tokenizer surface
        masking_probability=float(values["masked_lm_prob"]),
        short_sequence_probability=float(values["short_seq_prob"]),
        masking_max_ngram=int(values["max_ngram"]),
        masking_do_full_word=bool(values["whole_word_masking"]),
        masking_do_permutation=False,
        masking_use_longer_ngrams=False,
        masking_use_geometric_distribution=False,
        classification_head=bool(values["binary_head"]),
    )


def build_pretraining_datasets(
    cfg: Any, tokenizer, num_samples: Sequence[int]
) -> Tuple[Optional[torch.utils.data.Dataset], ...]:
    """``(train, valid, test)`` masked-LM datasets; an entry is None when its split is not built.

    ``num_samples[i]`` is the number of samples split ``i`` must provide (megatron-core repeats
    its documents in new orders as needed); 0 skips the split, and so does a 0 share in
    ``split``. A count is required: megatron-core 0.16's BERT dataset cannot build an
    open-ended epoch (``num_samples=None`` fails inside ``helpers.build_mapping``), which also
    breaks its unweighted multi-corpus blends, so a list of prefixes without weights is
    weighted here by each corpus's token count. Indexing a dataset gives megatron's sample
    dict; batch them with :class:`PretrainingCollator`.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Transformer Engine and Apex")
        from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset
        from megatron.core.datasets.blended_megatron_dataset_builder import (
            BlendedMegatronDatasetBuilder,
        )

    if not torch.distributed.is_initialized():
        raise RuntimeError(
            "build_pretraining_datasets needs torch.distributed initialised: megatron-core builds "
            "the sample index on rank 0 behind a barrier. Call "
            "biomegatron_nemo.parallel.state.initialize_megatron() (a 1-process gloo group) first.")
    num_samples = list(num_samples)
    if len(num_samples) != 3:
        raise ValueError(f"num_samples must give (train, valid, test), got {num_samples!r}")
    if any(n is None or int(n) < 0 for n in num_samples):
        raise ValueError("every split needs a number of samples (0 to skip it): megatron-core's "
                         f"BERT dataset cannot build an open-ended epoch; got {num_samples}")
    num_samples = [int(n) for n in num_samples]
    config = make_dataset_config(cfg, tokenizer)
    prefixes, weights = config.blend
    _check_split_has_documents(prefixes, config.split, config.split_matrix, num_samples)
    if len(prefixes) > 1 and weights is None:
        config.blend = (prefixes, [float(corpus_token_count(p)) for p in prefixes])
    # Splits not asked for: drop their document range from the split matrix (the other ranges
    # are unchanged, so train/valid/test stay disjoint whichever subset is built).
    config.split_matrix = [None if n == 0 else rng
                           for n, rng in zip(num_samples, config.split_matrix)]
    if all(rng is None for rng in config.split_matrix):
        return (None, None, None)
    datasets = BlendedMegatronDatasetBuilder(
        BERTMaskedWordPieceDataset, num_samples, lambda: True, config).build()
    for name, dataset in zip(SPLITS, datasets):
        if dataset is not None and len(dataset) == 0:
            raise ValueError(
                f"the {name} split of {config.blend[0]} yields no samples: it needs documents "
                f"with {'2 sentences (binary_head)' if config.classification_head else '1 sentence'}"
                " and more; give it a larger share in split, or more text")
    return tuple(datasets)


def corpus_sizes(prefix: str) -> Tuple[int, int]:
    """(documents, tokens) of a preprocessed corpus, read from ``PREFIX.idx``."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    # Keep the dataset referenced while reading: its arrays are views into its index mmap,
    # which it closes when collected (a temporary segfaults here).
    dataset = IndexedDataset(prefix)
    sizes = (len(dataset.document_indices) - 1, int(dataset.sequence_lengths.sum()))
    del dataset
    return sizes


def corpus_token_count(prefix: str) -> int:
    """Tokens in a preprocessed corpus (``PREFIX.idx``)."""
    return corpus_sizes(prefix)[1]


def _check_split_has_documents(prefixes: Sequence[str], split: str, split_matrix, num_samples
                               ) -> None:
    """megatron-core fails with an IndexError deep in its index builder on an empty split."""
    for prefix in prefixes:
        documents = corpus_sizes(prefix)[0]
        for name, bounds, n in zip(SPLITS, split_matrix, num_samples):
            if bounds is None or n == 0:
                continue
            beg, end = (int(round(b * documents)) for b in bounds)
            if end <= beg:
                raise ValueError(
                    f"split={split!r} gives the {name} split of {prefix!r} no documents (it has "
                    f"{documents}); give {name} a larger share, more text, or 0 samples")


class PretrainingCollator:
    """megatron-core BERT sample dicts → the batch contract in the module docstring (picklable)."""

    def __init__(self, pad_id: int, sep_id: int):
        self.pad_id = int(pad_id)
        self.sep_id = int(sep_id)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        text = torch.from_numpy(np.stack([s["text"] for s in samples])).long()
        types = torch.from_numpy(np.stack([s["types"] for s in samples])).long()
        labels = torch.from_numpy(np.stack([s["labels"] for s in samples])).long()
        loss_mask = torch.from_numpy(np.stack([s["loss_mask"] for s in samples])).long()
        positions = torch.arange(text.shape[1]).expand_as(text)
        # Every sample ends with the final [SEP] (a boundary, never masked); padding follows.
        last_sep = torch.where(text == self.sep_id, positions, -1).max(dim=1, keepdim=True).values
        if bool((last_sep < 0).any()):
            raise ValueError("a pretraining sample has no [SEP]: tokenizer and dataset disagree")
        attention_mask = (positions <= last_sep).long()
        return {
            "input_ids": text.masked_fill(attention_mask == 0, self.pad_id),
            "token_type_ids": types * attention_mask,
            "attention_mask": attention_mask,
            "lm_labels": labels.masked_fill(loss_mask == 0, IGNORE_INDEX),
            "loss_mask": loss_mask.float(),
            "sentence_order_labels": torch.tensor([int(s["is_random"]) for s in samples],
                                                  dtype=torch.long),
        }


def _default_train_samples(model, micro_batch_size: int) -> Optional[int]:
    """``max_steps × global batch`` when the trainer fixes the number of steps."""
    trainer = getattr(model, "_trainer", None)  # ModelPT keeps it here
    if trainer is None:
        try:
            trainer = getattr(model, "trainer", None)
        except RuntimeError:  # LightningModule.trainer raises when no Trainer is attached
            trainer = None
    max_steps = getattr(trainer, "max_steps", -1) if trainer is not None else -1
    if max_steps is None or max_steps <= 0:
        return None
    from megatron.core import parallel_state

    data_parallel = (parallel_state.get_data_parallel_world_size()
                     if parallel_state.model_parallel_is_initialized() else 1)
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    return int(max_steps) * micro_batch_size * data_parallel * accumulate


def build_pretraining_dataloader(model, data_config: Any, split: str) -> torch.utils.data.DataLoader:
    """The ``DataLoader`` of one split for ``model`` (its ``tokenizer``; ``cfg.data`` if present).

    ``data_config`` is the split's section (``train_ds`` / ``validation_ds`` / ``test_ds``); the
    dataset keys may live there or in a shared ``model.cfg.data`` section (the split's section
    wins). Only the requested split is built; its documents are the same as when all three are.
    The loader does not shuffle (megatron-core's sample index is already a seeded permutation)
    and has no sampler: the parallel strategy adds the data-parallel one.
    """
    index = _SPLIT_ALIASES.get(split)
    if index is None:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    shared = getattr(model, "cfg", {}).get("data", None) if hasattr(model, "cfg") else None
    values = {**(_as_dict(shared) if shared is not None else {}), **_as_dict(data_config)}
    micro_batch_size = int(values.get("micro_batch_size", 8))
    n = values.get("num_samples")
    if n is None and index == 0:
        n = _default_train_samples(model, micro_batch_size)
    if n is None:
        raise ValueError(f"the {split} data config needs num_samples (the samples one pass of "
                         f"{split} should draw{'' if index else '; or set trainer.max_steps'})")
    num_samples: List[int] = [0, 0, 0]
    num_samples[index] = n
    datasets = build_pretraining_datasets(values, model.tokenizer, num_samples)
    dataset = datasets[index]
    if dataset is None:
        raise ValueError(f"split={values.get('split', DEFAULTS['split'])!r} gives the {split} "
                         "split no documents; give it a non-zero share")
    consumed = int(values.get("consumed_samples", 0) or 0)
    if consumed:
        # Resuming: megatron-core's sample order is fixed by the seed, so continuing the run
        # means starting at the first sample not yet trained on (Megatron-LM's
        # consumed_samples); Lightning would otherwise restart the loader at sample 0.
        if consumed >= len(dataset):
            raise ValueError(f"consumed_samples={consumed} but the {split} split has only "
                             f"{len(dataset)} samples; raise num_samples")
        dataset = torch.utils.data.Subset(dataset, range(consumed, len(dataset)))
    num_workers = int(values.get("num_workers", 0))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=micro_batch_size,
        shuffle=False,
        drop_last=bool(values.get("drop_last", index == 0)),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=PretrainingCollator(model.tokenizer.pad_id, model.tokenizer.sep_id),
    )
