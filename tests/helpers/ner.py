"""NER runs in spawned processes (pipeline-parallel validation)."""

from __future__ import annotations

import json

MICROBATCHES = 2  # the batch is split: the last stage's outputs are merged


def spawned_pipeline_validation(rank, world_size, nemo_file, dev_file, batch_size, out):
    """Restore an NER .nemo as 2 pipeline stages and validate it through Lightning."""
    import torch.distributed as dist
    from omegaconf import open_dict

    from biomegatron_nemo.models.token_classification import TokenClassificationModel
    from biomegatron_nemo.parallel import initialize_megatron
    from biomegatron_nemo.parallel.trainer import build_trainer

    initialize_megatron(1, 2)  # the restored model builds this rank's stage at once
    model = TokenClassificationModel.restore_from(nemo_file)
    with open_dict(model.cfg):
        model.cfg.pipeline.num_microbatches = MICROBATCHES
        model.cfg.validation_ds.file = dev_file
        model.cfg.validation_ds.batch_size = batch_size
        model.cfg.validation_ds.max_seq_length = 16
    trainer = build_trainer({"devices": 2, "enable_progress_bar": False, "enable_model_summary": False},
                            {"pipeline_model_parallel_size": 2})
    model.setup_validation_data(model.cfg.validation_ds)
    collected = []
    original = model.on_eval_output

    def record(split, batch, output):
        collected.append(split)
        original(split, batch, output)

    model.on_eval_output = record
    metrics = trainer.validate(model, verbose=False)[0]
    flags = [None] * world_size
    dist.all_gather_object(flags, bool(collected))
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"val_f1": metrics["val_f1"], "first_stage_collected": flags[0],
                       "last_stage_collected": flags[1]}, f)


def spawned_token_budget_run(rank, world_size, nemo_file, train_file, dev_file, max_tokens, out):
    """Validate, then train 2 steps, under data parallelism with ``max_tokens`` batches; rank 0
    writes the validation F1 and every rank's training batches (window indices)."""
    import torch.distributed as dist
    from lightning.pytorch import Callback
    from omegaconf import open_dict

    from biomegatron_nemo.models.token_classification import TokenClassificationModel
    from biomegatron_nemo.parallel import initialize_megatron
    from biomegatron_nemo.parallel.trainer import build_trainer

    initialize_megatron(1, 1)
    model = TokenClassificationModel.restore_from(nemo_file)
    with open_dict(model.cfg):
        model.cfg.train_ds.update(file=train_file, batch_size=64, max_tokens=max_tokens)
        model.cfg.validation_ds.update(file=dev_file, batch_size=64, max_tokens=max_tokens)
    seen = []

    class Record(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch["window_index"].tolist())

    trainer = build_trainer({"devices": 2, "max_steps": 2, "enable_progress_bar": False,
                             "enable_model_summary": False, "enable_checkpointing": False, "logger": False,
                             "num_sanity_val_steps": 0}, callbacks=[Record()])
    model.setup_training_data(model.cfg.train_ds)
    model.setup_validation_data(model.cfg.validation_ds)
    val_f1 = trainer.validate(model, verbose=False)[0]["val_f1"]
    trainer.fit(model)
    batches = [None] * world_size
    dist.all_gather_object(batches, seen)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"val_f1": val_f1, "batches": batches}, f)
