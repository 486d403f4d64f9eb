"""Masked-LM pretraining data: megatron-core's BERT dataset over preprocessed corpora, and batches.

This module owns the second half of pretraining data (the first half, corpus → ``.bin/.idx``, is
:mod:`biomegatron_nemo.data.preprocess`): building train/valid/test
``BERTMaskedWordPieceDataset`` splits through megatron-core's ``BlendedMegatronDatasetBuilder``
(several corpora blended with weights, one split string, on-disk sample-index cache), and
turning megatron's sample dicts into the batch the pretraining model consumes. Masking,
sentence packing, truncation and the sentence-order targets are megatron-core's, not ours.

Config: the ``data:`` section is :class:`PretrainingDataConfig` (defaults follow Megatron-LM's
``pretrain_bert.py``; ``docs/configuration.md`` lists every key), e.g.::

    data_prefix: [0.7, /data/pubmed_abs, 0.3, /data/pmc]   # or [prefix, ...] or "prefix"
    split: "949,50,1"            # train,valid,test shares of each corpus's documents

:func:`build_pretraining_datasets` takes it together with the sample seed and whether the
sentence-order targets are drawn (:class:`PretrainingDatasetConfig`); a model passes its own
``seed`` and ``binary_head``. Each split's loader (:func:`build_pretraining_dataloader`) takes a
:class:`PretrainingSplitConfig` (``micro_batch_size``, ``num_samples``).

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
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from biomegatron_nemo.common.config import Schema, option, validate_config
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.data.collate import IGNORE_INDEX

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": 0, "training": 0, "validation": 1, "valid": 1, "val": 1, "test": 2}


@dataclass
class PretrainingDataConfig(Schema):
    """The ``data:`` section: which corpora, and how megatron-core's BERT dataset samples them."""

    data_prefix: Any = option(None, "a preprocessed PREFIX (PREFIX.bin/.idx), [PREFIX, ...] or "
                                    "[weight, PREFIX, weight, PREFIX, ...]")
    split: str = option("949,50,1", "train,valid,test shares of each corpus's documents")
    seq_length: int = option(128, "tokens per sample: [CLS] A [SEP] B [SEP] + padding")
    masked_lm_prob: float = option(0.15, "share of tokens to predict; 80% [MASK], 10% random, 10% kept")
    short_seq_prob: float = option(0.1, "share of samples deliberately shorter than seq_length")
    whole_word_masking: bool = option(True, "mask every sub-token of a word together")
    max_ngram: int = option(3, "mask n-grams of up to this many words, P(n) ~ 1/n (Megatron-LM: 3; BERT: 1)")
    path_to_cache: Optional[str] = option(None, "sample-index cache folder; null: <prefix folder>/cache")
    num_workers: int = option(0, "DataLoader worker processes")

    def check(self) -> None:
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ConfigError(f"must be in (0, 1), got {self.masked_lm_prob}", key="masked_lm_prob")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {self.short_seq_prob}", key="short_seq_prob")
        if self.seq_length < 8:
            raise ConfigError(f"must be at least 8, got {self.seq_length}", key="seq_length")
        if self.max_ngram < 1:
            raise ConfigError(f"must be >= 1, got {self.max_ngram}", key="max_ngram")
        if self.num_workers < 0:
            raise ConfigError(f"must be >= 0, got {self.num_workers}", key="num_workers")


@dataclass
class PretrainingDatasetConfig(PretrainingDataConfig):
    """:class:`PretrainingDataConfig` plus what the model decides: sample seed, sentence-order targets."""

    seed: int = option(1234, "fixes sample order, masking and segment swaps")
    binary_head: bool = option(False, "draw sentence-order targets (segments swapped with p = 0.5)")


@dataclass
class PretrainingSplitConfig(Schema):
    """A ``train_ds`` / ``validation_ds`` / ``test_ds`` section of the pretraining model."""

    micro_batch_size: int = option(8, "samples per batch and data-parallel rank")
    num_samples: Optional[int] = option(None, "samples one pass draws; training: null = "
                                              "trainer.max_steps x global batch")
    defer_setup: bool = option(True, "build the data in setup(), once the tokenizer exists (keep true)")

    def check(self) -> None:
        if self.micro_batch_size < 1:
            raise ConfigError(f"must be >= 1, got {self.micro_batch_size}", key="micro_batch_size")
        if self.num_samples is not None and self.num_samples < 1:
            raise ConfigError(f"must be >= 1 (or null), got {self.num_samples}", key="num_samples")


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
    """megatron-core's ``BERTMaskedWordPieceDatasetConfig`` from a :class:`PretrainingDatasetConfig`
    (mapping, DictConfig or the dataclass)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Transformer Engine and Apex")
        from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDatasetConfig

    values: PretrainingDatasetConfig = validate_config(cfg, PretrainingDatasetConfig, where="pretraining data")
    return BERTMaskedWordPieceDatasetConfig(
        random_seed=values.seed,
        sequence_length=values.seq_length,
        blend=_blend(values.data_prefix),
        split=values.split,
        path_to_cache=values.path_to_cache,
        tokenizer=tokenizer,  # a BioTokenizer has megatron-core's tokenizer surface
        masking_probability=values.masked_lm_prob,
        short_sequence_probability=values.short_seq_prob,
        masking_max_ngram=values.max_ngram,
        masking_do_full_word=values.whole_word_masking,
        masking_do_permutation=False,
        masking_use_longer_ngrams=False,
        masking_use_geometric_distribution=False,
        classification_head=values.binary_head,
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
    # megatron-core, asked for samples from a split where no document can give one, passes over
    # it 2**31 times before it returns nothing (seconds for a few documents, hours for a corpus)
    min_sentences = 2 if config.classification_head else 1
    for name, bounds in zip(SPLITS, config.split_matrix):
        if bounds is not None and not any(_can_give_samples(p, bounds, min_sentences) for p in prefixes):
            raise ValueError(_no_samples(name, config))
    datasets = BlendedMegatronDatasetBuilder(
        BERTMaskedWordPieceDataset, num_samples, lambda: True, config).build()
    for name, dataset in zip(SPLITS, datasets):
        if dataset is not None and len(dataset) == 0:
            raise ValueError(_no_samples(name, config))
    return tuple(datasets)


def _no_samples(name: str, config) -> str:
    return (f"the {name} split of {config.blend[0]} yields no samples: it needs documents "
            f"with {'2 sentences (binary_head)' if config.classification_head else '1 sentence'}"
            " and more; give it a larger share in split, or more text")


#: megatron-core's sample index skips a document of several sentences with one longer than this
#: (``LONG_SENTENCE_LEN`` of megatron/core/datasets/helpers.cpp)
LONG_SENTENCE_TOKENS = 512


def _can_give_samples(prefix: str, bounds, min_sentences: int) -> bool:
    """Whether the documents of split ``bounds`` of ``prefix`` include one that megatron-core's
    sample index takes: ``min_sentences`` sentences or more, and, with several, none longer than
    :data:`LONG_SENTENCE_TOKENS` (its rules, read from ``PREFIX.idx`` without building anything)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix)  # referenced while its arrays (views into its mmap) are read
    starts = np.asarray(dataset.document_indices, dtype=np.int64)
    documents = len(starts) - 1
    beg, end = (int(round(b * documents)) for b in bounds)  # as megatron-core splits the documents
    first, last = starts[beg:end], starts[beg + 1:end + 1]
    sentences = last - first
    long = np.concatenate([[0], np.cumsum(np.asarray(dataset.sequence_lengths) > LONG_SENTENCE_TOKENS)])
    has_long = long[last] > long[first]
    found = bool(np.any((sentences >= min_sentences) & ~((sentences > 1) & has_long)))
    del dataset
    return found


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


def build_pretraining_dataloader(dataset_cfg: Any, split_cfg: Any, split: str, tokenizer,
                                 num_samples: Optional[int] = None) -> torch.utils.data.DataLoader:
    """The ``DataLoader`` of one split.

    ``dataset_cfg`` is a :class:`PretrainingDatasetConfig`, ``split_cfg`` the split's
    :class:`PretrainingSplitConfig`; ``num_samples`` (the caller's default when the split
    config gives none, e.g. a training run's ``max_steps x global batch``) is how many samples
    the split must provide. Only the requested split is built; its documents are the same as
    when all three are. The loader does not shuffle (megatron-core's sample index is already a
    seeded permutation) and has no sampler: the caller adds the data-parallel one.
    """
    index = _SPLIT_ALIASES.get(split)
    if index is None:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    data: PretrainingDatasetConfig = validate_config(dataset_cfg, PretrainingDatasetConfig, where="pretraining data")
    loader_cfg: PretrainingSplitConfig = validate_config(split_cfg, PretrainingSplitConfig, where=f"{split} data")
    n = loader_cfg.num_samples or num_samples
    if n is None:
        raise ConfigError(f"the {split} split needs num_samples (the samples one pass of {split} should draw"
                          f"{'' if index else '; or set trainer.max_steps'})", key="num_samples")
    counts: List[int] = [0, 0, 0]
    counts[index] = int(n)
    dataset = build_pretraining_datasets(data, tokenizer, counts)[index]
    if dataset is None:
        raise ValueError(f"split={data.split!r} gives the {split} split no documents; give it a non-zero share")
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=loader_cfg.micro_batch_size,
        shuffle=False,
        drop_last=index == 0,
        num_workers=data.num_workers,
        persistent_workers=data.num_workers > 0,
        collate_fn=PretrainingCollator(tokenizer.pad_id, tokenizer.sep_id),
    )
