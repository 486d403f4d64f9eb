"""A NaN in one step's forward pass is caught at that step: the run stops naming it
(``on_nonfinite=error``, the default) or that update is skipped and counted (``skip``) — it never
trains on."""

import json

import pytest
import torch
from lightning.pytorch import Callback

from helpers.training import pretrain


class NaNAtStep(Callback):
    """The encoder's output is multiplied by NaN during the batch that becomes step ``step``;
    the weights are recorded after every step."""

    def __init__(self, step):
        self.step, self.hook, self.weights = step, None, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step + 1 == self.step:
            self.hook = pl_module.encoder.register_forward_hook(lambda module, args, out: out * float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.hook is not None:
            self.hook.remove()
            self.hook = None
        self.weights[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()
                                             if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("clip", ["1.0", "0"], ids=["clipping", "no-clipping"])
def test_a_nan_step_stops_the_run_naming_the_step(tmp_path, tiny_vocab, corpus, clip):
    """The guard shares the clipping hook's gradient norm, and runs when nothing is clipped too."""
    nan = NaNAtStep(5)
    with pytest.raises(FloatingPointError, match=r"step 5: the gradient norm is nan"):
        pretrain(tmp_path / "exp", tiny_vocab, corpus, 8, tmp_path / "r.json", callbacks=[nan],
                 extra=[f"trainer.gradient_clip_val={clip}"])
    assert sorted(nan.weights) == [1, 2, 3, 4]  # no update was made with step 5's gradients


def test_a_skipped_nan_step_leaves_the_weights_and_training_goes_on(tmp_path, tiny_vocab, corpus):
    nan = NaNAtStep(5)
    trainer, model = pretrain(tmp_path / "exp", tiny_vocab, corpus, 8, tmp_path / "r.json", callbacks=[nan],
                              extra=["model.on_nonfinite=skip"])
    losses = {int(k): v for k, v in json.loads((tmp_path / "r.json").read_text())["losses"].items()}
    assert sorted(losses) == list(range(1, 9))
    assert losses[5] != losses[5]  # the NaN loss of step 5 ...
    for name, value in nan.weights[5].items():  # ... changed no weight
        assert torch.equal(value, nan.weights[4][name]), name
    assert any(not torch.equal(nan.weights[6][k], nan.weights[5][k]) for k in nan.weights[5])  # step 6 trained
    assert all(losses[s] == losses[s] for s in (6, 7, 8))
    assert model._nonfinite_skipped == 1 and float(trainer.callback_metrics["train_nonfinite_skipped"]) == 1.0
