"""Analyses behind the paper's tables (sub-token break rate, label bias)."""
