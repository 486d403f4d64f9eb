"""Named entity recognition: fine-tune and test a BioMegatron encoder (Hydra config: conf/token_classification.yaml).

    python examples/token_classification.py                     # SAMPLE data as shipped
    python examples/token_classification.py model.train_ds.file=train.tsv model.validation_ds.file=devel.tsv \
        model.test_ds.file=test.tsv model.tokenizer.vocab_file=vocab.txt model.language_model.nemo_file=lm.nemo
    torchrun --nproc_per_node=2 examples/token_classification.py trainer.devices=2 model.tokenizer.vocab_file=...
    python examples/token_classification.py do_training=false restore_from=ner.nemo model.test_ds.file=test.tsv
    python examples/token_classification.py --help             # every option (Hydra)

Logs and checkpoints go through NeMo's exp_manager (nemo_experiments/<name>/run); the fine-tuned
model is written as <name>.nemo in its checkpoints folder. Testing logs test_f1 (and per type),
prints a conlleval-style table and writes test_predictions.conll (word gold pred) in the log folder.
``${samples:PATH}`` in the config names a file shipped in biomegatron_nemo/samples. Every key:
docs/configuration.md.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from biomegatron_nemo.metrics.ner import format_ner_table
from biomegatron_nemo.models.runs import register_run_configs
from biomegatron_nemo.models.token_classification import TokenClassificationModel
from biomegatron_nemo.parallel.trainer import build_trainer

register_run_configs()  # the schema conf/token_classification.yaml builds on, and ${samples:...}


def learn_vocabulary(cfg: DictConfig, log_dir: Path) -> None:
    """``model.tokenizer.vocab_file=null``: learn a WordPiece vocabulary from the training file,
    so the example runs as written. For real runs use the pretrained encoder's vocabulary."""
    from biomegatron_nemo.data.conll import read_conll
    from biomegatron_nemo.tokenizers.train import train_wordpiece

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # every rank would train and write the same files into the same folder at once
        raise ValueError("with several processes set model.tokenizer.vocab_file (learn one with "
                         "python -m biomegatron_nemo.tokenizers.train)")
    text = log_dir / "train_text.txt"
    sentences = read_conll(cfg.model.train_ds.file)
    text.write_text("\n".join(" ".join(s.words) for s in sentences) + "\n", encoding="utf-8")
    vocab = train_wordpiece([str(text)], str(log_dir), vocab_size=int(cfg.learn_vocab_size),
                            cased=bool(cfg.model.tokenizer.cased), soft_limit=True,
                            progress=False)[0]
    with open_dict(cfg):
        cfg.model.tokenizer.vocab_file = vocab
    print(f"learned a WordPiece vocabulary from {cfg.model.train_ds.file}: {vocab}")


@hydra.main(config_path="../conf", config_name="token_classification", version_base=None)
def main(cfg: DictConfig) -> None:
    from nemo.utils.exp_manager import exp_manager

    OmegaConf.resolve(cfg)  # the saved .nemo config must not need this script's resolvers
    trainer = build_trainer(cfg.trainer, cfg.parallel)
    log_dir = Path(exp_manager(trainer, cfg.get("exp_manager")))
    if cfg.restore_from:
        # built at once without a trainer; trainer.fit/test attach this one
        model = TokenClassificationModel.restore_from(cfg.restore_from)
    else:
        if cfg.model.tokenizer.library == "wordpiece" and not cfg.model.tokenizer.vocab_file:
            learn_vocabulary(cfg, log_dir)
        model = TokenClassificationModel(cfg.model, trainer=trainer)
    if trainer.is_global_zero:
        print(OmegaConf.to_yaml(model.cfg))
    if cfg.do_training:
        trainer.fit(model)
    if cfg.do_testing and cfg.model.test_ds is not None and cfg.model.test_ds.file:
        model.setup_test_data(cfg.model.test_ds)
        trainer.test(model)
        if trainer.is_global_zero:
            output = log_dir / "test_predictions.conll"
            scores = model.evaluate(cfg.model.test_ds.file, output_file=str(output),
                                    batch_size=int(cfg.model.test_ds.batch_size))
            print(f"test set {cfg.model.test_ds.file}:\n{format_ner_table(scores)}\npredictions: {output}")
    if trainer.is_global_zero:
        print(f"logs and checkpoints: {log_dir}")


if __name__ == "__main__":
    main()
