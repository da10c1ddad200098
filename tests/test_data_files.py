"""Token files at scale: an index over many files (never a copy), the held-out validation sample,
the memory-free batch order, the tokenizer/data/embedding checks and repetition, each bad input a
one-line error naming the file with exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ladder.data.checks import repetition
from ladder.data.errors import DataError
from ladder.data.pipeline import prepare_data
from ladder.data.sequences import BatchSampler, FeistelPermutation, SkipHeldOut, held_out, permutation
from ladder.data.tokenizer import EOS, PAD, load_tokenizer, train_bpe_tokenizer
from ladder.recipe import DataConfig, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 300


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A small byte-level BPE saved as tokenizer.json (+ config): what a user's local tokenizer is."""
    d = tmp_path_factory.mktemp("tok")
    texts = [f"def f{i}(x):\n    return x * {i} + {i * 7}\n" for i in range(300)]
    train_bpe_tokenizer(texts, VOCAB, d)
    return d


@pytest.fixture(scope="module")
def tok_json(tok_dir):
    return str(tok_dir / "tokenizer.json")


def corpus(n_tokens: int, eos: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(2, VOCAB - 2, n_tokens).astype(np.uint16)
    arr[rng.random(n_tokens) < 0.02] = eos
    arr[-1] = eos
    return arr


def write_split(arr: np.ndarray, d: Path, cuts: list[int]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(arr)])):
        arr[a:b].tofile(d / f"part-{i:03d}.npy")


def tokens_cfg(path, **kw) -> DataConfig:
    return DataConfig(source="tokens", path=str(path), **kw)


def test_many_files_give_the_batches_of_one_concatenated_file(tmp_path, tok_json):
    eos = load_tokenizer(ModelConfig(tokenizer=tok_json)).eos_token_id
    arr = corpus(50_000, eos)
    write_split(arr, tmp_path / "many", [7, 7, 5_000, 5_001, 20_000, 33_333])  # one empty file
    write_split(arr, tmp_path / "one", [])
    model = ModelConfig(tokenizer=tok_json)
    many = prepare_data(tokens_cfg(tmp_path / "many" / "*.npy", validation_fraction=0.1), model, tmp_path)
    one = prepare_data(tokens_cfg(tmp_path / "one" / "*.npy", validation_fraction=0.1), model, tmp_path)
    assert len(many.train.files) == 7 and len(one.train.files) == 1 and len(many.train) == len(arr)
    assert any("files of data.path do not end with EOS" in x for x in many.notes)  # shards cut mid-document
    assert not any("EOS" in x for x in one.notes)
    L = 64
    (mt, mv), (ot, ov) = many.sequences(L), one.sequences(L)
    assert (mt.n, mv.n) == (ot.n, ov.n) and mt.n + mv.n == len(arr) // L
    for world in (1, 2):
        for rank in range(world):
            a = BatchSampler(mt.n, 16, seed=3, rank=rank, world=world)
            b = BatchSampler(ot.n, 16, seed=3, rank=rank, world=world)
            for step in (0, 1, 7, 50, 80):  # 80 is past the first epoch
                assert np.array_equal(mt.get(a.indices(step)), ot.get(b.indices(step)))
    assert np.array_equal(mv.get(np.arange(mv.n)), ov.get(np.arange(ov.n)))
    # each sequence is exactly a slice of the concatenation, across file boundaries
    seq = mt.ids(np.arange(mt.n))
    for j in (0, 1, mt.n // 2, mt.n - 1):
        i = int(seq[j])
        assert np.array_equal(mt.get(np.array([j]))[0], arr[i * L:(i + 1) * L])


def test_validation_is_a_seeded_sample_of_whole_sequences_never_trained_on(tmp_path, tok_json):
    eos = load_tokenizer(ModelConfig(tokenizer=tok_json)).eos_token_id
    arr = corpus(64_000, eos, seed=1)
    write_split(arr, tmp_path / "c", [16_000, 32_000, 48_000])
    d = prepare_data(tokens_cfg(tmp_path / "c" / "*.npy", validation_fraction=0.1), ModelConfig(tokenizer=tok_json),
                     tmp_path)
    L = 32
    train, val = d.sequences(L)
    n = len(arr) // L
    val_ids = {int(v) for v in val.ids(np.arange(val.n))}
    train_ids = {int(t) for t in train.ids(np.arange(train.n))}
    assert val.n == int(np.ceil(0.1 * n)) and not val_ids & train_ids and val_ids | train_ids == set(range(n))
    assert len({i * L // 16_000 for i in val_ids}) == 4  # drawn from every file, not the tail of the last
    again = prepare_data(tokens_cfg(tmp_path / "c" / "*.npy", validation_fraction=0.1),
                         ModelConfig(tokenizer=tok_json), tmp_path).sequences(L)[1]
    assert np.array_equal(val.get(np.arange(val.n)), again.get(np.arange(again.n)))  # same for every rung
    texts = d.validation_texts(limit=5)
    assert len(texts) == 5 and all(isinstance(t, str) for t in texts)
    # a separate validation set: every train sequence is trained on, the other files validate
    (tmp_path / "v").mkdir()
    arr[:8_000].tofile(tmp_path / "v" / "val.npy")
    d2 = prepare_data(tokens_cfg(tmp_path / "c" / "*.npy", validation_path=str(tmp_path / "v" / "*.npy")),
                      ModelConfig(tokenizer=tok_json), tmp_path)
    t2, v2 = d2.sequences(L)
    assert t2.n == n and v2.n == 8_000 // L
    assert sorted(map(tuple, v2.get(np.arange(v2.n)))) == sorted(map(tuple, arr[:8_000].reshape(-1, L)))


def test_batch_order_without_memory_for_huge_corpora():
    for n in (1, 2, 3, 17, 1000, 4099):
        assert sorted(FeistelPermutation(n, [5, 0])(np.arange(n))) == list(range(n))
    n = 10**11  # a 1 TiB-scale corpus: no 800 GB permutation in memory
    a, b = BatchSampler(n, 8, seed=1), BatchSampler(n, 8, seed=1)
    steps = [a.indices(s) for s in (0, 1, 10**6)]
    assert all(np.array_equal(x, b.indices(s)) for x, s in zip(steps, (0, 1, 10**6)))
    assert len({int(i) for x in steps for i in x}) == 24 and all(((x >= 0) & (x < n)).all() for x in steps)
    r0, r1 = BatchSampler(n, 8, 1, rank=0, world=2), BatchSampler(n, 8, 1, rank=1, world=2)
    assert np.array_equal(np.concatenate([r0.indices(5), r1.indices(5)]), a.indices(5))
    small = permutation(50, [3, 0])  # small corpora keep numpy's permutation (the same batches as before)
    assert np.array_equal(small(np.arange(50)), np.random.default_rng([3, 0]).permutation(50))
    held = held_out(10**12, 1000)
    skip = SkipHeldOut(held)
    assert len(set(held.tolist())) == 1000 and not set(skip(np.arange(0, 10**12 - 1000, 10**9)).tolist()) & set(held.tolist())


def test_sparse_files_index_in_bounded_memory(tmp_path, tok_json):
    """The 1 TiB benchmark scaled down: 16 sparse files of 256 MiB (4 GiB of tokens, no disk):
    the old loader copied them all into memory."""
    d = tmp_path / "sparse"
    d.mkdir()
    for i in range(16):
        os.truncate(os.open(d / f"part-{i:02d}.npy", os.O_CREAT | os.O_WRONLY), 256 << 20)
    code = f"""
import resource, sys
import numpy as np
from ladder.data.pipeline import prepare_data
from ladder.data.sequences import BatchSampler
from ladder.recipe import DataConfig, ModelConfig
d = prepare_data(DataConfig(source="tokens", path={str(d / '*.npy')!r}, tokens_dtype="uint32",
                            validation_fraction=0.01), ModelConfig(tokenizer={tok_json!r}), {str(tmp_path)!r})
train, val = d.sequences(128)
s = BatchSampler(train.n, 64, seed=0)
x = np.concatenate([train.get(s.indices(i)) for i in range(20)] + [val.get(np.arange(64))])
print(len(d.train), train.n, val.n, int(x.sum()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
print("\\n".join(d.notes))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    tokens, n_train, n_val, total, rss_mb = map(int, lines[0].split())
    assert tokens == 16 * (256 << 20) // 4 and n_train + n_val == tokens // 128 and total == 0
    assert rss_mb < 1024, rss_mb  # the concatenating loader needed > 4 GiB here


def test_repetition_warns_and_refuses_beyond_the_limit():
    assert repetition("data/*.npy", 100, 1000, 4) is None
    assert "2.50 times" in repetition("data/*.npy", 2500, 1000, 4)
    assert "2.50 times" in repetition("data/*.npy", 2500, 1000, None)
    with pytest.raises(DataError, match=r"data.max_epochs: .* data/\*.npy holds 1,000 training tokens \(5.00 epochs > 4\)"):
        repetition("data/*.npy", 5000, 1000, 4)


def test_tokenizer_by_directory_and_hub_id(tok_dir, monkeypatch):
    tok = load_tokenizer(ModelConfig(tokenizer=str(tok_dir)))  # AutoTokenizer.from_pretrained, as for a hub id
    assert len(tok) == VOCAB and tok.eos_token == EOS and tok.pad_token == PAD
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="model.tokenizer: cannot load 'allenai/dolma2-tokenizer'"):
        load_tokenizer(ModelConfig(tokenizer="allenai/dolma2-tokenizer"))
    recipe = yaml.safe_load((ROOT / "recipes" / "olmo-ladder.yaml").read_text())
    assert recipe["model"]["tokenizer"] == "allenai/dolma2-tokenizer"  # what its 100,352 rows are sized for
    assert recipe["model"]["vocab_size"] >= 100_278 and recipe["data"]["tokens_dtype"] == "uint32"


@pytest.fixture(scope="module")
def dolma2_like(tmp_path_factory):
    """A tokenizer.json shaped like OLMo-2's dolma2: 100,278 tokens, EOS 100257, pad 100277."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(100_278)}
    vocab[EOS], vocab[PAD] = 100_257, 100_277
    del vocab["w100257"], vocab["w100277"]
    tk = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    p = tmp_path_factory.mktemp("dolma2") / "tokenizer.json"
    tk.save(str(p))
    return str(p)


def test_dolma2_shaped_tokenizer_and_uint32_data(tmp_path, dolma2_like):
    tok = load_tokenizer(ModelConfig(tokenizer=dolma2_like))
    assert len(tok) == 100_278 and tok.eos_token_id == 100_257
    arr = np.array([5, 100_000, 100_257, 7, 8, 100_257] * 100, dtype=np.uint32)
    arr.tofile(tmp_path / "a.npy")
    d = prepare_data(tokens_cfg(tmp_path / "a.npy", tokens_dtype="uint32"), ModelConfig(tokenizer=dolma2_like), tmp_path)
    assert int(d.sequences(6)[0].get(np.array([0])).max()) == 100_257
    with pytest.raises(DataError, match="data.tokens_dtype: uint16 token files cannot hold the ids"):
        prepare_data(tokens_cfg(tmp_path / "a.npy"), ModelConfig(tokenizer=dolma2_like), tmp_path)


# ---------------------------------------------------------------------------- bad input, end to end


def _train_cli(tmp_path, capsys, data: dict, model: dict | None = None, **over) -> tuple[int, str]:
    from ladder.cli import main

    recipe = {"name": "t", "model": {"sizes": ["tiny-9k"], **(model or {})},
              "data": {"source": "tokens", "validation_fraction": 0.1, **data}, "multipliers": [0.05],
              "train": {"seq_len": 32, "batch_tokens": 256, "cpu_threads": 1}, **over}
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe))
    capsys.readouterr()
    code = main(["train", str(p), "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"),
                 "--no-progress"])
    return code, capsys.readouterr().err


def test_bad_token_data_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, tok_json, dolma2_like):
    eos = load_tokenizer(ModelConfig(tokenizer=tok_json)).eos_token_id
    good = corpus(40_000, eos)
    write_split(good, tmp_path / "d", [20_000])
    bad_ids = good[:1000].copy()
    bad_ids[500] = VOCAB + 5
    bad_ids.tofile(tmp_path / "d" / "part-009.npy")
    cases = {
        "ids": ({"path": str(tmp_path / "d" / "*.npy")}, {"tokenizer": tok_json},
                [str(tmp_path / "d" / "part-009.npy"), f"holds token id {VOCAB + 5}", f"has {VOCAB} tokens"]),
        "size": ({"path": str(tmp_path / "odd.npy")}, {"tokenizer": tok_json},
                 [str(tmp_path / "odd.npy"), "not a whole number of uint16 tokens"]),
        "glob": ({"path": str(tmp_path / "none" / "*.npy")}, {"tokenizer": tok_json},
                 ["data.path: no token files match", "none/*.npy"]),
        "embedding": ({"path": str(tmp_path / "d" / "part-000.npy"), "tokens_dtype": "uint32"},
                      {"tokenizer": dolma2_like, "vocab_size": 65_536},
                      ["model.vocab_size' (65536) is smaller than the tokenizer", "100278 tokens"]),
        "repeats": ({"path": str(tmp_path / "d" / "part-000.npy"), "max_epochs": 2}, {"tokenizer": tok_json},
                    ["data.max_epochs:", str(tmp_path / "d" / "part-000.npy"), "> 2)"]),
    }
    (tmp_path / "odd.npy").write_bytes(b"\x00\x01\x02")
    (tmp_path / "d32").mkdir()
    good.astype(np.uint32).tofile(tmp_path / "d" / "part-000.npy")  # uint32 view for the embedding case
    for name, (data, model, expect) in cases.items():
        if name == "repeats":
            good[:1000].tofile(tmp_path / "d" / "part-000.npy")  # 1,000 tokens for a 0.05xC budget
        code, err = _train_cli(tmp_path, capsys, data, model)
        lines = [x for x in err.strip().splitlines() if x.startswith("ladder train: error")]
        assert code == 2 and len(lines) == 1, (name, err)
        assert all(e in lines[0] for e in expect), (name, lines[0])
        assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
