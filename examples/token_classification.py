"""Named entity recognition: fine-tune and test a BioMegatron encoder (Hydra config: conf/token_classification.yaml).

    python examples/token_classification.py                     # SAMPLE data as shipped
    python examples/token_classification.py model.train_ds.file=train.tsv model.validation_ds.file=devel.tsv \
        model.test_ds.file=test.tsv model.language_model.pretrained=lm.nemo
    torchrun --nproc_per_node=2 examples/token_classification.py trainer.devices=2 model.language_model.pretrained=...
    python examples/token_classification.py do_training=false restore_from=ner.nemo model.test_ds.file=test.tsv
    python examples/token_classification.py --help             # every option (Hydra)

Logs and checkpoints go through NeMo's exp_manager (nemo_experiments/<name>/run); the fine-tuned
model is written as <name>.nemo in its checkpoints folder. Testing logs test_f1 (and per type),
prints a conlleval-style table and writes test_predictions.conll (word gold pred) in the log folder.
``${samples:PATH}`` in the config names a file shipped in biomegatron_nemo/samples. Every key:
docs/configuration.md.
"""

import hydra
from omegaconf import DictConfig

from biomegatron_nemo.runs.schemas import register_run_configs
from biomegatron_nemo.runs.registry import run_task

register_run_configs()  # the schema conf/token_classification.yaml builds on, and ${samples:...}


@hydra.main(config_path="../conf", config_name="token_classification", version_base=None)
def main(cfg: DictConfig) -> None:
    run_task("ner", cfg)  # the same run as `biomegatron finetune ner`


if __name__ == "__main__":
    main()
