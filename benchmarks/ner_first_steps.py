"""The losses of the first training steps of the BC5CDR NER benchmark's model, to show that a code
change leaves training bit-identical (the budgeted benchmark stops at a step that depends on the
machine's speed, so its F1 moves by a few points between runs of the same code).

    python benchmarks/ner_first_steps.py --steps 30 --output new.json
    PYTHONPATH=OTHER_CHECKOUT python benchmarks/ner_first_steps.py --steps 30 --output old.json  # its package
    cmp old.json new.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--output", required=True, help="file for the losses (JSON list)")
    parser.add_argument("--batching", choices=("random", "grouped"), default="random",
                        help="random: the batches of checkouts before length grouping (a newer checkout "
                             "with grouped batches trains on another order by design)")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    from lightning.pytorch import Callback

    import ner_bc5cdr
    from biomegatron_nemo.models.token_classification import TokenClassificationModel
    from biomegatron_nemo.parallel.trainer import build_trainer

    torch.set_num_threads(1)
    losses = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    trainer = build_trainer({"max_steps": args.steps, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                             "gradient_clip_val": 1.0, "enable_progress_bar": False, "enable_model_summary": False},
                            callbacks=[Record()])
    bench_args = ner_bc5cdr.parse_args(["--batching", args.batching])
    model = TokenClassificationModel(ner_bc5cdr.model_config(bench_args), trainer=trainer)
    trainer.fit(model)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(losses, f)


if __name__ == "__main__":
    main()
