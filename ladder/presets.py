"""Model size presets: name -> Hugging Face ``Olmo2Config``, and N counted as the ladder paper does.

The paper's N counts every weight of the model with the embedding matrix once and no separate
output head (its models tie nothing, but the head is not counted). Planning counts in closed form
(:meth:`Preset.params`), so that ``ladder sizes``, ``plan`` and a sweep's checks need neither
torch nor transformers (seconds of imports); the count must describe the model actually trained,
so every training run compares it with the built model (``ladder.train.setup.build_model``)
and the tests with every preset built on the ``meta`` device (:func:`count_params`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

PAPER_VOCAB = 100_352  # dolma2 tokenizer, padded: the paper's embedding rows


def embedding_rows(n_tokens: int) -> int:
    """Embedding rows for a tokenizer of ``n_tokens``: rounded up to a multiple of 128, as OLMo
    pads its vocabulary (100,278 dolma2 tokens -> 100,352 rows) for efficient matmuls."""
    return -(-int(n_tokens) // 128) * 128
PAPER_SEQ_LEN = 4096
TINY_VOCAB = 1024  # the embedded byte-level BPE's size
ROPE_THETA = 500_000.0


@dataclass(frozen=True)
class Preset:
    """One model size. ``mlp_hidden`` is HF's ``intermediate_size`` (SwiGLU hidden width)."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    mlp_hidden: int
    vocab_size: int = PAPER_VOCAB  # default embedding rows (a recipe's tokenizer may change it)
    tiny: bool = False

    def config(self, vocab_size: int | None = None, seq_len: int = PAPER_SEQ_LEN, **overrides):
        """The ``Olmo2Config`` of this size: QK-norm, RoPE θ=500k, no biases, untied head."""
        from transformers import Olmo2Config

        kw = dict(
            vocab_size=int(vocab_size or self.vocab_size),
            hidden_size=self.d_model,
            num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_heads,
            intermediate_size=self.mlp_hidden,
            max_position_embeddings=int(seq_len),
            rope_theta=ROPE_THETA,
            attention_bias=False,
            attention_dropout=0.0,
            rms_norm_eps=1e-6,
            initializer_range=0.02,
            tie_word_embeddings=False,
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
        )
        kw.update(overrides)
        return Olmo2Config(**kw)

    def params(self, vocab_size: int | None = None) -> ParamCount:
        """N as the built ``Olmo2ForCausalLM`` of :meth:`config` has it, in closed form: per
        layer the q, k, v, o projections (4 d^2; as many KV heads as heads), the SwiGLU MLP
        (3 d f), and four RMSNorm weights of d (QK-norm, post-attention, post-MLP); a final
        norm; the embedding; an untied output head (counted in ``n_total`` only)."""
        d, f, v = self.d_model, self.mlp_hidden, int(vocab_size or self.vocab_size)
        embed = v * d
        n = self.n_layers * (4 * d * d + 3 * d * f + 4 * d) + d + embed
        return ParamCount(n=n, n_nonembed=n - embed, n_embed=embed, n_total=n + embed)

    def flops_per_token(self, seq_len: int, vocab_size: int | None = None) -> int:
        """Training FLOPs per token (forward + backward = 3x forward), as used for MFU.

        6 x (matmul weights, including the output head but not the embedding lookup) plus the
        attention score/value matmuls, 6 x 2 x layers x seq_len x d_model (PaLM appendix B,
        causal masking not discounted, as most MFU reports do)."""
        pc = self.params(vocab_size)
        return 6 * (pc.n_total - pc.n_embed) + 12 * self.n_layers * int(seq_len) * self.d_model


def _paper(name: str, d: int, layers: int, heads: int, mlp: int | None = None) -> Preset:
    return Preset(name, d, layers, heads, mlp if mlp is not None else 4 * d)


def _tiny(name: str, d: int, layers: int, heads: int) -> Preset:
    return Preset(name, d, layers, heads, 4 * d, vocab_size=TINY_VOCAB, tiny=True)


# The paper's sizes (shared README: OLMo-2 "peteish" architectures).
PAPER_PRESETS = [
    _paper("190M", 768, 12, 12),
    _paper("370M", 1024, 16, 16),
    _paper("760M", 1536, 16, 16),
    _paper("1B", 2048, 16, 16),
    _paper("3B", 3328, 16, 16),
    _paper("7B", 4096, 32, 32, 11_008),
    _paper("13B", 5120, 40, 40, 13_824),
]
# Tiny rungs for CPU: same architecture family; names give N with the embedded 1,024-token BPE.
TINY_PRESETS = [
    _tiny("tiny-9k", 8, 1, 1),
    _tiny("tiny-25k", 16, 2, 2),
    _tiny("tiny-43k", 24, 2, 2),
    _tiny("tiny-82k", 32, 3, 2),
    _tiny("tiny-160k", 48, 3, 3),
    _tiny("tiny-330k", 64, 4, 4),
    _tiny("tiny-690k", 96, 4, 4),
    _tiny("tiny-1.7m", 128, 6, 4),
    _tiny("tiny-4.9m", 192, 8, 6),
]
PRESETS: dict[str, Preset] = {p.name: p for p in PAPER_PRESETS + TINY_PRESETS}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model size '{name}'; known sizes: {', '.join(PRESETS)}") from None


@dataclass(frozen=True)
class ParamCount:
    n: int  # the paper's N: all weights, embedding once, output head not counted
    n_nonembed: int  # N minus the embedding matrix
    n_embed: int  # embedding matrix (vocab x d_model)
    n_total: int  # every parameter tensor, including the untied output head


def count_params(config) -> ParamCount:
    """Count on the model of ``config`` built on the ``meta`` device (no memory): what
    :meth:`Preset.params` is checked against."""
    return _count_cached(config.to_json_string(use_diff=False))


@lru_cache(maxsize=64)
def _count_cached(config_json: str) -> ParamCount:
    import json

    import torch
    from transformers import Olmo2Config, Olmo2ForCausalLM

    config = Olmo2Config(**json.loads(config_json))
    with torch.device("meta"):
        return model_params(Olmo2ForCausalLM(config))


def model_params(model) -> ParamCount:
    """The paper's count of a built causal LM: shared tensors once, the output head not in N."""
    total = sum(p.numel() for p in model.parameters())  # shared tensors counted once
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    n_head = 0 if head is embed else head.numel()
    n = total - n_head
    return ParamCount(n=n, n_nonembed=n - embed.numel(), n_embed=embed.numel(), n_total=total)


def size_table(names: list[str] | None = None, seq_len: int | None = None,
               vocab_size: int | None = None) -> list[dict]:
    """Rows for ``ladder sizes``: architecture, N, non-embedding N, FLOPs/token."""
    rows = []
    for name in names or list(PRESETS):
        p = get_preset(name)
        sl = seq_len or (PAPER_SEQ_LEN if not p.tiny else 128)
        pc = p.params(vocab_size)
        rows.append(dict(name=p.name, d_model=p.d_model, n_layers=p.n_layers, n_heads=p.n_heads,
                         mlp_hidden=p.mlp_hidden, vocab_size=int(vocab_size or p.vocab_size),
                         seq_len=sl, n_params=pc.n, n_nonembed=pc.n_nonembed,
                         flops_per_token=p.flops_per_token(sl, vocab_size)))
    return rows
