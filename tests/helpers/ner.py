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
