"""Extractive question answering — SQuAD v1.1/v2.0, then BioASQ factoid: fine-tune and test a
BioMegatron encoder (Hydra config: conf/question_answering.yaml).

    python examples/question_answering.py                       # SAMPLE data as shipped (BioASQ-style)
    python examples/question_answering.py model.dataset=squad model.train_ds.file=train-v1.1.json \
        model.validation_ds.file=dev-v1.1.json model.test_ds.file=dev-v1.1.json \
        model.language_model.pretrained=lm.nemo
    python examples/question_answering.py model.dataset=bioasq model.train_ds.file=BioASQ-train-factoid-7b.json \
        model.test_ds.file=BioASQ-test-factoid-7b-1.json model.test_ds.golden_file=7B1_golden.json \
        model.language_model.pretrained=squad.nemo model.init_heads=true
    torchrun --nproc_per_node=2 examples/question_answering.py trainer.devices=2 model.language_model.pretrained=...
    python examples/question_answering.py do_training=false restore_from=qa.nemo model.test_ds.file=dev.json
    python examples/question_answering.py --help                # every option (Hydra)

Files: SQuAD JSON (v2.0 with ``model.version_2_with_negative=true``); BioASQ in BioBERT's SQuAD
format (ids ``<question>_<nnn>``, one snippet per paragraph) with the official golden file for
testing. Logs and checkpoints go through NeMo's exp_manager (nemo_experiments/<name>/run).
Testing prints the scores (SQuAD: the official scripts' EM/F1; BioASQ: strict/lenient accuracy
and MRR over questions) and writes predictions.json, nbest_predictions.json, null_odds.json (v2.0)
and bioasq_submission.json (BioASQ) into <log folder>/test_predictions. Every key:
docs/configuration.md.
"""

import hydra
from omegaconf import DictConfig

from biomegatron_nemo.runs.schemas import register_run_configs
from biomegatron_nemo.runs.registry import run_task

register_run_configs()  # the schema conf/question_answering.yaml builds on, and ${samples:...}


@hydra.main(config_path="../conf", config_name="question_answering", version_base=None)
def main(cfg: DictConfig) -> None:
    run_task("qa", cfg)  # the same run as `biomegatron finetune qa`


if __name__ == "__main__":
    main()
