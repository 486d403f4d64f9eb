"""Post-LayerNorm BERT layers (the original BERT, BioBERT, PubMedBERT) through megatron-core's spec.

megatron-core's ``TransformerLayer`` is pre-LayerNorm only: LayerNorm → attention → residual add,
LayerNorm → MLP → residual add. BERT orders them the other way: attention → residual add →
LayerNorm, MLP → residual add → LayerNorm, with a LayerNorm on the embeddings and none at the end.
megatron-core has no spec for that, so :func:`post_layernorm_spec` builds one from a pre-LN spec:
the two pre-LayerNorms become identities and each bias-dropout-add is replaced by
:class:`PostLayerNormBiasDropoutAdd`, which runs megatron-core's own bias-dropout-add and then a
LayerNorm it owns (megatron-core's LayerNorm class, replicated across tensor-parallel ranks like
every LayerNorm of the encoder; the attention and MLP linears stay megatron-core's parallel ones).
The embedding LayerNorm and the missing final LayerNorm are the encoder's part
(:class:`~biomegatron_nemo.encoder.model.MegatronBertEncoder`).
"""

from __future__ import annotations

import copy

import torch
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig


class PostLayerNormBiasDropoutAdd(torch.nn.Module):
    """megatron-core's bias-dropout-add, then this module's LayerNorm: ``LN(residual + dropout(x + b))``.

    Called the way ``TransformerLayer`` calls its ``*_bda`` entries: ``bda(training, fused)``
    returns the function applied to ``((x, bias), residual, dropout_prob)``.
    """

    def __init__(self, config: TransformerConfig, norm_class):
        super().__init__()
        self.layer_norm = norm_class(config=config, hidden_size=config.hidden_size, eps=config.layernorm_epsilon)

    def forward(self, training: bool, fused: bool):
        bias_dropout_add = get_bias_dropout_add(training, fused)

        def apply(x_with_bias, residual, prob):
            return self.layer_norm(bias_dropout_add(x_with_bias, residual, prob))

        return apply


def post_layernorm_spec(pre_ln_spec: ModuleSpec, config: TransformerConfig) -> ModuleSpec:
    """The post-LayerNorm version of a (local or portable) pre-LayerNorm BERT layer spec."""
    spec = copy.deepcopy(pre_ln_spec)
    sub = spec.submodules
    norm_class = sub.input_layernorm
    if norm_class is IdentityOp:
        raise ValueError("post-LayerNorm layers need a spec with separate LayerNorm modules (not 'te', "
                         "which fuses LayerNorm into the linears); use layer_spec portable or local")
    sub.input_layernorm = IdentityOp
    sub.pre_mlp_layernorm = IdentityOp
    sub.self_attn_bda = ModuleSpec(module=PostLayerNormBiasDropoutAdd, params={"config": config, "norm_class": norm_class})
    sub.mlp_bda = ModuleSpec(module=PostLayerNormBiasDropoutAdd, params={"config": config, "norm_class": norm_class})
    sub.sharded_state_dict_keys_map = {}
    return spec
