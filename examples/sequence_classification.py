"""Relation extraction (ChemProt) / sentence classification: fine-tune and test a BioMegatron encoder
(Hydra config: conf/sequence_classification.yaml).

    python examples/sequence_classification.py                  # SAMPLE data as shipped
    python examples/sequence_classification.py model.train_ds.file=train.tsv model.validation_ds.file=dev.tsv \
        model.test_ds.file=test.tsv model.tokenizer.vocab_file=vocab.txt model.language_model.nemo_file=lm.nemo
    torchrun --nproc_per_node=2 examples/sequence_classification.py trainer.devices=2 model.tokenizer.vocab_file=...
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

from biomegatron_nemo.data.chemprot import read_classification_tsv
from biomegatron_nemo.metrics.classification import format_classification_table
from biomegatron_nemo.models.finetuning import run_finetuning
from biomegatron_nemo.models.runs import register_run_configs
from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel

register_run_configs()  # the schema conf/sequence_classification.yaml builds on, and ${samples:...}


def training_texts(path):
    return [ex.text for ex in read_classification_tsv(path)]


def report_test(model, test_file, log_dir):
    output, report = log_dir / "test_predictions.tsv", log_dir / "test_report"
    scores = model.evaluate(test_file, output_file=str(output), report_dir=str(report),
                            batch_size=int(model.cfg.test_ds.batch_size))
    data = scores["data"]
    return (f"{format_classification_table(scores)}\n{data['truncated']} sentences cut around their markers "
            f"({data['markers_cut']} with markers too far apart to keep both), {data['missing_markers']} "
            f"without two markers\npredictions: {output}\nreport: {report}")


@hydra.main(config_path="../conf", config_name="sequence_classification", version_base=None)
def main(cfg: DictConfig) -> None:
    run_finetuning(cfg, SequenceClassificationModel, training_texts, report_test)


if __name__ == "__main__":
    main()
