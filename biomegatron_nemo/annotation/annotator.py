"""NER models over whole documents: sentences of every passage, pooled over many documents into
one length-sorted inference per model, entities put back at document offsets, and the entities of
several models merged by one rule.

Merging (:func:`merge_entities`): where entities of the models overlap, the longer span wins;
of equal lengths the higher score; of equal scores the model named first. Entities that do not
overlap are all kept, so a chemical model and a disease model give both types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from biomegatron_nemo.annotation.documents import Document
from biomegatron_nemo.annotation.engines import Engines, EngineSettings
from biomegatron_nemo.data.sentence_split import sentence_spans


@dataclass(frozen=True)
class Entity:
    start: int  # character offsets in the document's text
    end: int
    text: str
    type: str
    score: float
    model: int  # which of the annotator's models found it


def merge_entities(found: Sequence[Entity]) -> List[Entity]:
    """The entities that survive the overlap rule (module doc), in document order."""
    kept: List[Entity] = []
    for entity in sorted(found, key=lambda e: (-(e.end - e.start), -e.score, e.model, e.start)):
        if all(entity.end <= other.start or other.end <= entity.start for other in kept):
            kept.append(entity)
    return sorted(kept, key=lambda e: (e.start, e.end))


def load_ner_models(paths: Sequence[str]) -> list:
    """NER ``.nemo`` files restored for inference, on this rank's GPU (``LOCAL_RANK``) where there
    is one, else on the CPU; another task's model is an error naming it."""
    import os

    import torch

    from biomegatron_nemo.models.base import BioMegatronModelPT
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    device = (torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available()
              else torch.device("cpu"))
    models = []
    for path in paths:
        model = BioMegatronModelPT.restore_from(str(path), map_location="cpu")
        if not isinstance(model, TokenClassificationModel):
            raise ValueError(f"{path}: a {type(model).__name__}; annotate runs NER (token classification) models")
        models.append(model.to(device).eval())  # infer() moves each batch to the model's device
    return models


def default_batch_size(device) -> int:
    """Sentences per forward: 16 on a CPU, where small batches keep the activations in cache
    (MiniLM on one core: 16 sentences ran 16% faster than 64, 1.9x faster than 256), 64 on a GPU."""
    return 64 if device.type == "cuda" else 16


class Annotator:
    """Entities of documents by one or more NER models (``TokenClassificationModel``), run as
    ``engine`` says (:mod:`~biomegatron_nemo.annotation.engines`: fp32, bf16, ONNX Runtime, int8)."""

    def __init__(self, models: Sequence, batch_size: Optional[int] = None, max_seq_length=None,
                 engine: EngineSettings = EngineSettings()):
        if not models:
            raise ValueError("annotate needs at least one NER model")
        self.models = list(models)
        self.batch_size = batch_size or default_batch_size(next(self.models[0].parameters()).device)
        self.max_seq_length = max_seq_length
        self.engines = Engines(self.models, engine)

    @property
    def entity_types(self) -> List[str]:
        """Every type the models can find, in the order of the models' label maps."""
        types: List[str] = []
        for model in self.models:
            for label in model.label_map.labels:
                kind = label.split("-", 1)[1] if "-" in label else None
                if kind and kind not in types:
                    types.append(kind)
        return types

    def annotate(self, documents: Sequence[Document]) -> List[List[Entity]]:
        """Per document, its merged entities; ``document.text[e.start:e.end] == e.text`` for each."""
        pieces = []  # (document index, offset of the sentence in the document, sentence)
        for index, document in enumerate(documents):
            for passage in document.passages:
                for start, end in sentence_spans(passage.text):
                    pieces.append((index, passage.offset + start, passage.text[start:end]))
        found: List[List[Entity]] = [[] for _ in documents]
        if pieces:
            for number, (model, forward) in enumerate(zip(self.models, self.engines.forwards)):
                rows = model.predict([text for _, _, text in pieces], batch_size=self.batch_size,
                                     max_seq_length=self.max_seq_length, forward=forward)
                for (index, offset, _), entities in zip(pieces, rows):
                    found[index].extend(Entity(offset + e["start"], offset + e["end"], e["text"], e["type"],
                                               e["score"], number) for e in entities)
        merged = [merge_entities(entities) for entities in found]
        for document, entities in zip(documents, merged):
            text = document.text
            for entity in entities:  # the contract every writer relies on
                assert text[entity.start:entity.end] == entity.text, (document.id, entity)
        return merged
