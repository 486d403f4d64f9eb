"""NVIDIA's BioMegatron checkpoints on NGC, as NeMo's ``list_available_models`` lists them.

Nothing is downloaded: NGC needs an account and its CLI. They are Megatron-LM checkpoints
(``release/mp_rank_00/model_optim_rng.pt``) without a vocabulary; NGC ships the vocabulary next to
them. Naming the downloaded folder as ``model.language_model.pretrained`` is enough to fine-tune
from one; ``docs/checkpoints.md`` walks through it, and the command each entry gives converts one
into a ``.nemo`` of this library to keep.
"""

from __future__ import annotations

from typing import List

CONVERT = ("python -m biomegatron_nemo.export.convert --from megatron-lm --to nemo {folder} "
           "biomegatron.nemo --vocab-file {vocab}")
ENTRIES = [("biomegatron345muncased", "BioMegatron-345m (Megatron-LM checkpoint), uncased vocabulary"),
           ("biomegatron345mcased", "BioMegatron-345m (Megatron-LM checkpoint), cased vocabulary")]


def ngc_checkpoints(model_class) -> List:
    """One ``PretrainedModelInfo`` per NGC checkpoint, for ``model_class``."""
    from nemo.core.classes.common import PretrainedModelInfo

    return [PretrainedModelInfo(pretrained_model_name=name, class_=model_class,
                                location=f"https://catalog.ngc.nvidia.com/orgs/nvidia/models/{name}",
                                description=f"{text}. Download it with the NGC CLI, then name the folder as "
                                            "model.language_model.pretrained, or convert it with the vocabulary "
                                            "file NGC lists with it: "
                                            + CONVERT.format(folder=f"{name}/", vocab="VOCAB.txt"))
            for name, text in ENTRIES]
