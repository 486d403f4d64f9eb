"""Annotated documents as PubTator, BioC JSON, JSON lines or one self-contained HTML page.

Each format is written as a head, the documents (joined by :data:`SEPARATORS`) and a tail, so
that chunks of documents written separately join into the file one pass would write.

* ``pubtator``: ``ID|t|title``, ``ID|a|abstract``, then ``ID<TAB>start<TAB>end<TAB>mention<TAB>type<TAB>-``
  (no concept identifier: ``-``), a blank line after each document. A document without title
  and abstract is written as its title with an empty abstract, so offsets stay its own. PubTator
  has no line breaks inside a text: each is written as a space (one character for one, so
  offsets hold).
* ``bioc-json``: a BioC collection; each passage holds its annotations, with document offsets.
* ``jsonl``: ``{"id", "text", "entities": [{"start", "end", "text", "type", "score", "model"}]}``,
  and ``"passages"`` with title and abstract offsets when there are two.
* ``html``: every document with its entities highlighted by type, and a legend (no network).
"""

from __future__ import annotations

import html
import json
from typing import List, Sequence

from biomegatron_nemo.annotation.annotator import Entity
from biomegatron_nemo.annotation.documents import Document

OUTPUT_FORMATS = ("pubtator", "bioc-json", "jsonl", "html")
SEPARATORS = {"pubtator": "", "bioc-json": ",\n", "jsonl": "", "html": ""}
#: colours of the entity types in HTML, in the order the models name them (colour-blind safe)
COLOURS = ["#fdb462", "#80b1d3", "#b3de69", "#fccde5", "#bebada", "#ffffb3", "#8dd3c7", "#fb8072"]


def head(output_format: str, types: Sequence[str], models: Sequence[str]) -> str:
    if output_format == "bioc-json":
        infons = json.dumps({"models": ", ".join(models)}, ensure_ascii=False)
        return f'{{"source": "biomegatron_nemo", "date": "", "key": "", "infons": {infons}, "documents": [\n'
    if output_format == "html":
        styles = "\n".join(f".e{i} {{background: {COLOURS[i % len(COLOURS)]}}}" for i in range(len(types)))
        legend = " ".join(f'<mark class="e{i}">{html.escape(t)}</mark>' for i, t in enumerate(types))
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>biomegatron annotate</title>\n<style>\n"
                "body {font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 2}\n"
                "mark {padding: 0.1em 0.3em; border-radius: 0.3em}\n"
                "mark span {font-size: 0.65em; font-weight: bold; margin-left: 0.4em; text-transform: uppercase}\n"
                "article {border-bottom: 1px solid #ccc; padding: 0.5em 0}\nh2 {font-size: 1em; color: #555}\n"
                f"{styles}\n</style></head><body>\n<p>{legend} &middot; models: "
                f"{html.escape(', '.join(models))}</p>\n")
    return ""


def tail(output_format: str) -> str:
    return {"bioc-json": "\n]}\n", "html": "</body></html>\n"}.get(output_format, "")


def document_text(output_format: str, document: Document, entities: List[Entity], types: Sequence[str]) -> str:
    """One annotated document in ``output_format`` (without the separator)."""
    return _WRITERS[output_format](document, entities, types)


def _pubtator(document: Document, entities: List[Entity], types) -> str:
    def one_line(text: str) -> str:
        return text.replace("\r", " ").replace("\n", " ")

    if len(document.passages) == 2:
        title, abstract = document.passages[0].text, document.passages[1].text
    else:
        title, abstract = document.text, ""
    lines = [f"{document.id}|t|{one_line(title)}", f"{document.id}|a|{one_line(abstract)}"]
    lines += [f"{document.id}\t{e.start}\t{e.end}\t{one_line(e.text)}\t{e.type}\t-" for e in entities]
    return "\n".join(lines) + "\n\n"


def _annotation(number: int, entity: Entity) -> dict:
    return {"id": f"T{number}", "infons": {"type": entity.type, "score": f"{entity.score:.4f}"},
            "text": entity.text, "locations": [{"offset": entity.start, "length": entity.end - entity.start}]}


def _bioc(document: Document, entities: List[Entity], types) -> str:
    passages, number = [], 0
    for passage in document.passages:
        inside = [e for e in entities if passage.offset <= e.start < passage.offset + len(passage.text) + 1]
        annotations = []
        for entity in inside:
            number += 1
            annotations.append(_annotation(number, entity))
        passages.append({"infons": {"type": passage.kind}, "offset": passage.offset, "text": passage.text,
                         "sentences": [], "annotations": annotations, "relations": []})
    return json.dumps({"id": document.id, "infons": {}, "passages": passages, "relations": []}, ensure_ascii=False)


def _jsonl(document: Document, entities: List[Entity], types) -> str:
    record = {"id": document.id, "text": document.text}
    if len(document.passages) > 1:
        record["passages"] = [{"type": p.kind, "offset": p.offset} for p in document.passages]
    record["entities"] = [{"start": e.start, "end": e.end, "text": e.text, "type": e.type,
                           "score": round(e.score, 4), "model": e.model} for e in entities]
    return json.dumps(record, ensure_ascii=False) + "\n"


def _html(document: Document, entities: List[Entity], types: Sequence[str]) -> str:
    text, parts, at = document.text, [], 0
    for entity in entities:
        parts.append(html.escape(text[at:entity.start]))
        colour = types.index(entity.type) if entity.type in types else 0
        parts.append(f'<mark class="e{colour}" title="{html.escape(entity.type)} {entity.score:.2f}">'
                     f'{html.escape(entity.text)}<span>{html.escape(entity.type)}</span></mark>')
        at = entity.end
    parts.append(html.escape(text[at:]))
    return f"<article><h2>{html.escape(document.id)}</h2>\n<p>{''.join(parts)}</p></article>\n"


_WRITERS = {"pubtator": _pubtator, "bioc-json": _bioc, "jsonl": _jsonl, "html": _html}
