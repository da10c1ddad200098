"""The trained model: ``transformers``' ``Olmo2ForCausalLM`` whose training forward returns the
loss, computed from the final hidden states with the output head (:mod:`ladder.train.loss`),
so the step never holds ``tokens x vocab`` logits, nor accelerate's fp32 copy of them.

The class keeps the name ``Olmo2ForCausalLM`` on purpose: ``save_pretrained`` writes the class
name into ``config.json``'s ``architectures``, which other tools (vLLM, the hub's widgets)
read to pick the model; checkpoints are plain OLMo-2 checkpoints, with the same parameter
names, and load with ``AutoModelForCausalLM``.

Every forward runs without a KV cache: under FSDP each decoder layer is its own compiled frame,
and a cache makes Dynamo guard on the layer's index, so each layer would recompile until the
recompile limit and the rest run eagerly (tests/test_compile.py counts the recompiles).
"""

from __future__ import annotations

import torch
from transformers import Olmo2ForCausalLM as _HFOlmo2ForCausalLM

from ladder.train.loss import linear_cross_entropy


class Olmo2ForCausalLM(_HFOlmo2ForCausalLM):
    def forward(self, input_ids: torch.Tensor | None = None, *, loss_scale: float | None = None,
                loss_kernel: str | None = None, **kwargs):
        """With ``loss_scale``: the mean next-token CE of ``input_ids`` times ``loss_scale`` (a
        scalar tensor; the training step). Without: ``transformers``' output (logits)."""
        kwargs["use_cache"] = False
        if loss_scale is None:
            return super().forward(input_ids=input_ids, **kwargs)
        hidden = self.model(input_ids=input_ids, **kwargs).last_hidden_state
        return linear_cross_entropy(hidden, self.lm_head.weight, input_ids, loss_scale, loss_kernel)
