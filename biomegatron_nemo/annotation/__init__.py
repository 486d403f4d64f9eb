"""Corpus annotation: trained NER models run over documents (text lines, JSON lines, PubTator),
with entities at character offsets of the original documents, written as PubTator, BioC JSON,
JSON lines or HTML, in chunks that make a run resumable and shareable over processes."""
