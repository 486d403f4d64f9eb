"""biomegatron_nemo: BioMegatron (Shin et al., EMNLP 2020) on megatron-core, as NeMo models.

Submodules load lazily: ``import biomegatron_nemo`` stays cheap, and command-line tools that need
only tokenizers or metrics never import megatron-core or NeMo. Importing it registers the library
with NeMo, which restores only allow-listed classes: after it, NeMo's own
``ModelPT.restore_from("ner.nemo")`` returns the ``.nemo``'s model of this library.
"""

from biomegatron_nemo.common.imports import after_import

__version__ = "0.1.0"


def _allow_in_nemo() -> None:
    from nemo.core.classes.common import ALLOWED_TARGET_PREFIXES

    if "biomegatron_nemo." not in ALLOWED_TARGET_PREFIXES:
        ALLOWED_TARGET_PREFIXES.append("biomegatron_nemo.")


after_import("nemo.core.classes.common", "allow-list", _allow_in_nemo)
