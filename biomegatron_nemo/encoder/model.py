"""The Megatron-BERT encoder: megatron-core ``LanguageModelEmbedding`` + ``TransformerBlock``.

:class:`MegatronBertEncoder` owns embeddings (word — vocab-parallel —, learned absolute position,
token type), the pre-LayerNorm transformer stack and its final LayerNorm — or, with
``layernorm_order: post``, the original BERT's post-LayerNorm stack (:mod:`.post_ln`) with a
LayerNorm on the embeddings and none at the end. It is pipeline-aware
the megatron-core way: the first stage (``pre_process``) owns the embeddings, the last stage
(``post_process``) owns the final LayerNorm, and every stage builds only its share of layers
(megatron-core numbers them with the stage's layer offset). Intermediate stages receive their
input through :meth:`set_input_tensor`. With ``packed_sequences`` a whole model runs only the real
tokens of a batch that holds padding worth removing (:mod:`.packing`) and returns the padded layout.

``build_encoder`` is the single place that turns an :class:`EncoderConfig` and the current
parallel layout into a module.
"""

from __future__ import annotations

from typing import Optional

import torch
from megatron.core import parallel_state
from megatron.core.models.common.embeddings.language_model_embedding import LanguageModelEmbedding
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig

from .config import EncoderConfig
from .packing import PackedSequences, worth_packing
from .post_ln import post_layernorm_spec
from .recompute import RecomputingTransformerBlock
from .specs import get_layer_spec


def padding_mask_to_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[b, s]`` with 1 = real token → megatron-core's ``[b, 1, 1, s]`` bool, True = masked out.

    Only keys are masked: a padded query still attends to the real tokens, so no softmax row is
    empty (an all-masked row would give NaN in SDPA) and padded outputs stay finite.
    """
    return (attention_mask < 0.5)[:, None, None, :]


class MegatronBertEncoder(MegatronModule):
    """Embeddings + pre-LN transformer stack + final LayerNorm, for one pipeline stage."""

    #: state-dict key of the (vocab-parallel) word-embedding matrix, relative to the encoder
    WORD_EMBEDDINGS_KEY = "embedding.word_embeddings.weight"

    def __init__(
        self,
        encoder_config: EncoderConfig,
        transformer_config: TransformerConfig,
        pre_process: bool = True,
        post_process: bool = True,
    ):
        super().__init__(config=transformer_config)
        self.encoder_config = encoder_config
        self.pre_process = pre_process
        self.post_process = post_process
        tp = transformer_config.tensor_model_parallel_size
        self.padded_vocab_size = encoder_config.padded_vocab_size(tp)
        post_ln = encoder_config.layernorm_order == "post"
        if pre_process:
            self.embedding = LanguageModelEmbedding(
                config=transformer_config,
                vocab_size=self.padded_vocab_size,
                max_sequence_length=encoder_config.max_position_embeddings,
                position_embedding_type="learned_absolute",
                num_tokentypes=encoder_config.num_tokentypes,
            )
            if post_ln:
                # BERT: sum → LayerNorm → dropout; megatron-core's embedding would drop out first
                self.embedding.embedding_dropout = torch.nn.Identity()
                norm_class = get_layer_spec("portable").submodules.input_layernorm
                self.embedding_layernorm = norm_class(config=transformer_config, hidden_size=transformer_config.hidden_size,
                                                      eps=transformer_config.layernorm_epsilon)
                self.embedding_dropout = torch.nn.Dropout(transformer_config.hidden_dropout)
        backend = encoder_config.layer_spec
        if post_ln and backend == "auto":
            backend = "portable"  # Transformer Engine fuses LayerNorm into the linears: pre-LN only
        spec = get_layer_spec(backend)
        if post_ln:
            spec = post_layernorm_spec(spec, transformer_config)
        # post_process=True makes TransformerBlock build the final LayerNorm Megatron-BERT needs
        # (post-LN BERT has none: its layers end in a LayerNorm).
        self.encoder = RecomputingTransformerBlock(
            config=transformer_config,
            spec=spec,
            post_layer_norm=not post_ln,
            pre_process=pre_process,
            post_process=post_process,
        )

    def set_input_tensor(self, input_tensor) -> None:
        """Pipeline stages after the first take the previous stage's ``[s, b, h]`` output."""
        if isinstance(input_tensor, (list, tuple)):
            input_tensor = input_tensor[0]
        self.encoder.set_input_tensor(input_tensor)

    def word_embeddings_weight(self) -> Optional[torch.nn.Parameter]:
        return self.embedding.word_embeddings.weight if self.pre_process else None

    def forward(
        self,
        input_ids: Optional[torch.Tensor],
        attention_mask: torch.Tensor,
        token_type_ids: Optional[torch.Tensor] = None,
        hidden_states: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``[b, s]`` ids / mask / token types → ``[b, s, h]`` (last stage) or ``[s, b, h]``.

        Stages other than the first take ``hidden_states`` (``[s, b, h]``) instead of ids.
        """
        if self.pre_process:
            if input_ids is None:
                raise ValueError("the first pipeline stage needs input_ids")
            if input_ids.shape[1] > self.encoder_config.max_position_embeddings:
                raise ValueError(
                    f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings "
                    f"{self.encoder_config.max_position_embeddings}"
                )
        if self.packs_sequences() and worth_packing(attention_mask):
            return self._packed_forward(input_ids, attention_mask, token_type_ids)
        extended_mask = padding_mask_to_attention_mask(attention_mask)
        if not attention_mask.is_cuda and not torch.jit.is_tracing() and not bool(extended_mask.any()):
            # No padding in this batch: attention without a mask takes SDPA's faster kernels. Checked
            # once here rather than in every layer; on CPU the layers are the portable spec, which
            # takes None. Kept on CUDA (the check would sync the device) and in a traced graph.
            extended_mask = None
        if self.pre_process:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            hidden_states = self._embed(input_ids, position_ids.expand_as(input_ids), token_type_ids)
        elif hidden_states is not None:
            self.set_input_tensor(hidden_states)
            hidden_states = None
        output = self.encoder(hidden_states=hidden_states, attention_mask=extended_mask)
        if self.post_process:
            return output.transpose(0, 1).contiguous()
        return output

    def packs_sequences(self) -> bool:
        """Whether this forward runs packed (:mod:`.packing`): when configured, on a whole model
        (pipeline stages exchange fixed shapes), and never while tracing or exporting (the packed
        length depends on the data)."""
        return (self.encoder_config.packed_sequences and self.pre_process and self.post_process
                and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())

    def _packed_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """The real tokens only, as one ``thd`` sequence; the output back in ``[b, s, h]``."""
        packed = PackedSequences.from_attention_mask(attention_mask)
        if token_type_ids is not None:
            token_type_ids = packed.pack(token_type_ids)[None]
        hidden_states = self._embed(packed.pack(input_ids)[None], packed.position_ids()[None], token_type_ids)
        output = self.encoder(hidden_states=hidden_states, attention_mask=None, packed_seq_params=packed)
        return packed.to_padded(output.squeeze(1))

    def _embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
               token_type_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """``[b, s]`` ids, positions and token types → ``[s, b, h]`` embeddings."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        tokentype_ids = token_type_ids if self.encoder_config.num_tokentypes > 0 else None
        hidden_states = self.embedding(input_ids=input_ids, position_ids=position_ids, tokentype_ids=tokentype_ids)
        if self.encoder_config.layernorm_order == "post":
            hidden_states = self.embedding_dropout(self.embedding_layernorm(hidden_states))
        return hidden_states


def build_encoder(
    encoder_config: EncoderConfig,
    pre_process: Optional[bool] = None,
    post_process: Optional[bool] = None,
    **transformer_overrides,
) -> MegatronBertEncoder:
    """Build the encoder for this rank's tensor/pipeline position.

    megatron-core's ``parallel_state`` must be initialised (``initialize_model_parallel``);
    :func:`biomegatron_nemo.parallel.initialize_megatron` does that for single-process use.
    """
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage()
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage()
    tc = encoder_config.transformer_config(tp, pp, **transformer_overrides)
    return MegatronBertEncoder(encoder_config, tc, pre_process=pre_process, post_process=post_process)
