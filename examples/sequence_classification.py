"""Relation extraction (ChemProt) / sentence classification: fine-tune and test a BioMegatron encoder
(Hydra config: conf/sequence_classification.yaml).

    python examples/sequence_classification.py                  # SAMPLE data as shipped
    python examples/sequence_classification.py model.train_ds.file=train.tsv model.validation_ds.file=dev.tsv \
        model.test_ds.file=test.tsv model.language_model.pretrained=lm.nemo
    torchrun --nproc_per_node=2 examples/sequence_classification.py trainer.devices=2 model.language_model.pretrained=...
    python examples/sequence_classification.py do_training=false restore_from=re.nemo model.test_ds.file=test.tsv
    python examples/sequence_classification.py --help          # every option (Hydra)

Files: ``id<TAB>sentence<TAB>label`` or ``sentence<TAB>label``, entities masked as @CHEMICAL$ and
@GENE$ (BLUE). Logs and checkpoints go through NeMo's exp_manager (nemo_experiments/<name>/run).
Testing logs test_micro_f1 (positive classes; the negative label excluded), prints the per-class
table and confusion matrix, and writes test_predictions.tsv (id, label, probability) and a report
folder (per_class.tsv, confusion_matrix.tsv, confusion_matrix.png) in the log folder. Every key:
docs/configuration.md.
"""

import hydra
from omegaconf import DictConfig

from biomegatron_nemo.runs.schemas import register_run_configs
from biomegatron_nemo.runs.registry import run_task

register_run_configs()  # the schema conf/sequence_classification.yaml builds on, and ${samples:...}


@hydra.main(config_path="../conf", config_name="sequence_classification", version_base=None)
def main(cfg: DictConfig) -> None:
    run_task("re", cfg)  # the same run as `biomegatron finetune re`


if __name__ == "__main__":
    main()
