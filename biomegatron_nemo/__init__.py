"""biomegatron_nemo: BioMegatron (Shin et al., EMNLP 2020) on megatron-core, as NeMo models.

Submodules load lazily: ``import biomegatron_nemo`` stays cheap, and command-line tools that need
only tokenizers or metrics never import megatron-core or NeMo.
"""

__version__ = "0.1.0"
