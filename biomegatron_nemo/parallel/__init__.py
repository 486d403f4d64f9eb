"""Parallel layout: megatron-core ``parallel_state`` setup, the Lightning strategy, pipeline glue."""

from .state import destroy_megatron, initialize_megatron, parallel_layout

__all__ = ["initialize_megatron", "destroy_megatron", "parallel_layout"]
