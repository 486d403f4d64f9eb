"""The parallel half of corpus preprocessing: split documents into sentences and tokenize them,
in this process or in a ``spawn`` process pool, results in input order.

:mod:`biomegatron_nemo.data.preprocess` reads the corpus, sends documents here in batches and
writes what comes back. A separate module so that spawned workers import only what they run.
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple, Union

import numpy as np

from biomegatron_nemo.data.sentence_split import BiomedicalSentenceSplitter
from biomegatron_nemo.tokenizers.base import BioTokenizer

#: A tokenizer, or its config for :func:`biomegatron_nemo.tokenizers.build_tokenizer`.
TokenizerSpec = Union[Mapping, BioTokenizer]

#: Documents sent to a worker at a time (large enough to amortise pickling).
DOCUMENTS_PER_TASK = 32

# One encoded document: all its token ids, the length of each sentence, long sentences cut.
EncodedDocument = Tuple[np.ndarray, List[int], int]

_WORKER: Dict[str, object] = {}


def init_worker(tokenizer_spec: TokenizerSpec, max_sentence_tokens: int, in_pool: bool) -> None:
    """Set up this process (a pool worker, or the parent for ``workers=1``) to encode documents."""
    if in_pool:
        # One core per worker: HF tokenizers' own thread pool would oversubscribe the pool.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if isinstance(tokenizer_spec, Mapping):
        from biomegatron_nemo.tokenizers import build_tokenizer

        tokenizer_spec = build_tokenizer(tokenizer_spec)
    _WORKER["tokenizer"] = tokenizer_spec
    _WORKER["splitter"] = BiomedicalSentenceSplitter()
    _WORKER["max_sentence_tokens"] = max_sentence_tokens


def encode_documents(texts: Sequence[str]) -> List[EncodedDocument]:
    """Split and tokenize one batch; sentences over the token limit are cut into pieces."""
    tokenizer = _WORKER["tokenizer"]
    splitter = _WORKER["splitter"]
    limit = _WORKER["max_sentence_tokens"]
    per_document = [splitter.split(text) for text in texts]
    # One ids-only batch call for the whole task: the tokenizer's fastest path.
    flat = [sentence for sentences in per_document for sentence in sentences]
    encoded = iter(tokenizer.tokenize_batch(flat) if flat else [])
    out: List[EncodedDocument] = []
    for sentences in per_document:
        ids: List[int] = []
        lengths: List[int] = []
        n_cut = 0
        for _ in sentences:
            sentence = next(encoded)
            if len(sentence) > limit:
                n_cut += 1
            for start in range(0, len(sentence), limit):
                piece = sentence[start:start + limit]
                ids.extend(piece)
                lengths.append(len(piece))
        out.append((np.asarray(ids, dtype=np.int64), lengths, n_cut))
    return out


def batched(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def ordered_results(pool: ProcessPoolExecutor, tasks: Iterator[list], max_in_flight: int
                    ) -> Iterator[List[EncodedDocument]]:
    """Results of :func:`encode_documents` over ``tasks`` in input order, reading lazily.

    Not ``Pool.imap`` / ``Executor.map``: they drain the whole input into their queue first
    (a corpus in memory), and read errors would surface in a helper thread. Here the parent
    reads, keeps at most ``max_in_flight`` batches queued, and yields them first-in first-out,
    which is what makes the output byte-identical for any number of workers.
    A ``ProcessPoolExecutor`` (not ``multiprocessing.Pool``, which silently respawns a worker
    that dies in its initializer, forever) raises ``BrokenProcessPool`` when a worker dies.
    """
    in_flight = collections.deque()
    for task in tasks:
        in_flight.append(pool.submit(encode_documents, task))
        if len(in_flight) >= max_in_flight:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()
