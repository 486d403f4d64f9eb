"""Relation-extraction runs in spawned processes (tensor-parallel parity)."""

from __future__ import annotations


def spawned_logits(rank, world_size, config_file, sentences, out):
    """Build the RE model of ``config_file`` at TP=2 (its encoder from language_model.nemo_file)
    and write the classifier logits of ``sentences``."""
    import torch
    import torch.distributed as dist
    from omegaconf import OmegaConf

    from biomegatron_nemo.data.chemprot import ClassificationExample
    from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel
    from biomegatron_nemo.parallel import initialize_megatron

    initialize_megatron(2, 1)
    model = SequenceClassificationModel(OmegaConf.load(config_file))
    model.eval()
    ds = model.make_dataset([ClassificationExample(str(i), s, None) for i, s in enumerate(sentences)])
    batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        logits = model(**model.forward_inputs(batch)).logits
    if dist.get_rank() == 0:
        torch.save(logits, out)
