"""Extractive question answering — SQuAD v1.1/v2.0, then BioASQ factoid: fine-tune and test a
BioMegatron encoder (Hydra config: conf/question_answering.yaml).

    python examples/question_answering.py                       # SAMPLE data as shipped (BioASQ-style)
    python examples/question_answering.py model.dataset=squad model.train_ds.file=train-v1.1.json \
        model.validation_ds.file=dev-v1.1.json model.test_ds.file=dev-v1.1.json \
        model.tokenizer.vocab_file=vocab.txt model.language_model.nemo_file=lm.nemo
    python examples/question_answering.py model.dataset=bioasq model.train_ds.file=BioASQ-train-factoid-7b.json \
        model.test_ds.file=BioASQ-test-factoid-7b-1.json model.test_ds.golden_file=7B1_golden.json \
        model.init_from=squad.nemo model.init_heads=true model.tokenizer.vocab_file=vocab.txt
    torchrun --nproc_per_node=2 examples/question_answering.py trainer.devices=2 model.tokenizer.vocab_file=...
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

import json

import hydra
from omegaconf import DictConfig

from biomegatron_nemo.data.squad import read_squad
from biomegatron_nemo.models.finetuning import run_finetuning
from biomegatron_nemo.models.question_answering import QuestionAnsweringModel
from biomegatron_nemo.models.runs import register_run_configs

register_run_configs()  # the schema conf/question_answering.yaml builds on, and ${samples:...}


def training_texts(path):
    examples = read_squad(path)
    return list(dict.fromkeys(ex.context for ex in examples)) + [ex.question for ex in examples]


def report_test(model, test_file, log_dir):
    output = log_dir / "test_predictions"
    scores = model.evaluate(test_file, output_dir=str(output), golden_file=model.cfg.test_ds.get("golden_file"),
                            batch_size=int(model.cfg.test_ds.batch_size))
    shown = {k: v for k, v in scores.items() if k not in ("rank_of_first_correct", "data")}
    data = scores["data"]
    return (f"{json.dumps(shown, indent=1)}\n{data['examples']} questions in {data['features']} windows"
            f"\npredictions: {output}")


@hydra.main(config_path="../conf", config_name="question_answering", version_base=None)
def main(cfg: DictConfig) -> None:
    run_finetuning(cfg, QuestionAnsweringModel, training_texts, report_test)


if __name__ == "__main__":
    main()
