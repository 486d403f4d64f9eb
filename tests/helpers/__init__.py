"""Shared test helpers: tiny vocabularies and model configs, multi-process runs."""
