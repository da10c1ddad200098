import json

import pytest

from analysis.runlog import PAPER_N
from ladder.presets import PAPER_PRESETS, PRESETS, TINY_PRESETS, count_params, get_preset

PAPER_SIZES = ["190M", "370M", "760M", "1B", "3B", "7B", "13B"]


@pytest.mark.parametrize("name", PAPER_SIZES)
def test_paper_n_exact(name):
    pc = count_params(get_preset(name).config())
    assert pc.n == PAPER_N[name]
    assert pc.n_embed == 100_352 * get_preset(name).d_model
    assert pc.n_nonembed == pc.n - pc.n_embed
    assert pc.n_total == pc.n + pc.n_embed  # untied head, not counted in N


def test_1b_by_hand():
    # shared README: 16 x 67,108,864 + 16 x 4 x 2,048 + 2,048 + 100,352 x 2,048
    assert count_params(get_preset("1B").config()).n == 16 * 67_108_864 + 16 * 4 * 2048 + 2048 + 100_352 * 2048


def test_paper_architectures():
    p7 = get_preset("7B")
    cfg = p7.config()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (4096, 32, 32, 11_008)
    assert cfg.rope_parameters["rope_theta"] == 500_000
    assert cfg.attention_bias is False and cfg.tie_word_embeddings is False
    assert get_preset("13B").config().intermediate_size == 13_824
    assert get_preset("190M").config().intermediate_size == 4 * 768


@pytest.mark.parametrize("vocab", [None, 1024, 50_304])
def test_closed_form_count_equals_the_built_model(vocab):
    """Planning counts without building the model; the count must be the built model's."""
    for p in PRESETS.values():
        assert p.params(vocab) == count_params(p.config(vocab_size=vocab)), p.name


def test_flops_per_token():
    cfg = get_preset("1B").config(seq_len=4096)
    pc = count_params(cfg)
    f = get_preset("1B").flops_per_token(4096)
    # 6 x (non-embedding weights + output head) + attention term
    assert f == 6 * (pc.n_nonembed + pc.n_embed) + 12 * 16 * 4096 * 2048
    assert 6 * pc.n < f < 8 * pc.n


def test_tiny_presets_span_thousands_to_millions():
    ns = [count_params(p.config()).n for p in TINY_PRESETS]
    assert ns == sorted(ns)
    assert 1_000 < ns[0] < 20_000 and 1_000_000 < ns[-1] < 10_000_000
    for p, n in zip(TINY_PRESETS, ns):  # names state N (k/m, 2 significant digits)
        label = p.name.split("-")[1]
        approx = float(label[:-1]) * (1e3 if label.endswith("k") else 1e6)
        assert abs(n - approx) / n < 0.1, (p.name, n)


def test_unknown_preset():
    with pytest.raises(KeyError, match="unknown model size '5B'"):
        get_preset("5B")


def test_sizes_cli_prints_paper_n(ladder_here):
    r = ladder_here("sizes")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for name in PAPER_SIZES:
        line = next(l for l in out.splitlines() if l.startswith(name + " "))
        assert f"{PAPER_N[name]:,}" in line


def test_sizes_json(capsys):
    import argparse

    from ladder.cli import sizes

    sizes.run(argparse.Namespace(names=["190M", "tiny-25k"], seq_len=None, vocab_size=None, json=True))
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["190M", "tiny-25k"]
    assert rows[0]["n_params"] == 190_354_176 and rows[0]["n_nonembed"] == 190_354_176 - 100_352 * 768
    assert len(PRESETS) == len(PAPER_PRESETS) + len(TINY_PRESETS)
