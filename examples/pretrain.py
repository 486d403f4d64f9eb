"""Masked-LM pretraining of a BioMegatron encoder (Hydra config: conf/pretrain_bert.yaml).

    python examples/pretrain.py model.data.data_prefix=[PREFIX] model.tokenizer.vocab_file=vocab.txt
    torchrun --nproc_per_node=2 examples/pretrain.py trainer.devices=2 parallel.tensor_model_parallel_size=2 ...

Logs, checkpoints and resume go through NeMo's exp_manager (nemo_experiments/<name>/<version>);
the final model is written as <name>.nemo in the checkpoints folder. Rerunning the same command
resumes from the last checkpoint — exactly, also after a kill (docs/reliability.md), and also at
another tensor/pipeline layout. Continue from an existing model with model.init_from=FILE.nemo.
Every key: docs/configuration.md.
"""

import hydra
from omegaconf import DictConfig

from biomegatron_nemo.runs.schemas import register_run_configs
from biomegatron_nemo.runs.registry import run_task

register_run_configs()  # the schema conf/pretrain_bert.yaml builds on, and ${samples:...}


@hydra.main(config_path="../conf", config_name="pretrain_bert", version_base=None)
def main(cfg: DictConfig) -> None:
    run_task("pretrain", cfg)  # the same run as `biomegatron pretrain`


if __name__ == "__main__":
    main()
