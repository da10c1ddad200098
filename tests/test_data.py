import json

import numpy as np
import pytest

from ladder.data.errors import DataError
from ladder.data.pipeline import prepare_data, read_documents, split_documents
from ladder.data.sequences import BatchSampler, PackedSequences
from ladder.data.tokenizer import token_byte_lengths
from ladder.recipe import DataConfig, ModelConfig

SMALL = ModelConfig(tokenizer_vocab_size=320)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ladder-cache")


@pytest.fixture(scope="module")
def stdlib(cache):
    return prepare_data(DataConfig(max_bytes=400_000), SMALL, cache)


def test_pystdlib_corpus_is_deterministic_and_split(stdlib):
    cfg = DataConfig(max_bytes=400_000)
    docs = read_documents(cfg)
    assert docs == read_documents(cfg)
    assert [d.id for d in docs] == sorted(d.id for d in docs)
    assert all(d.id.endswith(".py") and not d.id.startswith("test/") for d in docs)
    assert sum(len(d.text.encode()) for d in docs) <= 400_000
    train, val = split_documents(docs, 0.05)
    assert {d.id for d in train}.isdisjoint(d.id for d in val) and len(train) + len(val) == len(docs)
    assert stdlib.validation_texts() == [d.text for d in val]


def test_tokenizer_loads_with_autotokenizer_and_eos_between_docs(stdlib, tmp_path):
    from transformers import AutoTokenizer

    tok = stdlib.tokenizer
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>" and len(tok) == 320
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "def f(x):\n    return x + 1\n"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.decode(again(text)["input_ids"]) == text
    train_docs, val_docs = split_documents(read_documents(DataConfig(max_bytes=400_000)), 0.05)
    assert int((np.asarray(stdlib.val) == tok.eos_token_id).sum()) == len(val_docs)
    first = tok(val_docs[0].text)["input_ids"]
    assert list(stdlib.val[: len(first) + 1]) == first + [tok.eos_token_id]


def test_bits_per_byte_table_is_exact(stdlib):
    lengths = token_byte_lengths(stdlib.tokenizer, 384)
    val_bytes = sum(len(t.encode()) for t in stdlib.validation_texts())
    assert int(lengths[np.asarray(stdlib.val)].sum()) == val_bytes
    assert lengths[stdlib.tokenizer.eos_token_id] == 0 and (lengths[320:] == 0).all()


def test_cache_is_reused(cache, stdlib):
    again = prepare_data(DataConfig(max_bytes=400_000), SMALL, cache)
    assert again.cache_path == stdlib.cache_path
    assert again.corpus_hash == stdlib.corpus_hash and again.tokenizer_hash == stdlib.tokenizer_hash
    other = prepare_data(DataConfig(max_bytes=300_000), SMALL, cache)
    assert other.corpus_hash != stdlib.corpus_hash and other.cache_path != stdlib.cache_path
    assert not list((cache / "tokens").glob(".*tmp*"))  # no temp dirs left behind


def test_sampler_deterministic_sharded_resumable():
    s = BatchSampler(n_seqs=50, batch_seqs=8, seed=3)
    steps = [s.indices(i) for i in range(20)]  # crosses epochs (50 sequences)
    assert [list(x) for x in steps] == [list(BatchSampler(50, 8, 3).indices(i)) for i in range(20)]
    first_epoch = np.concatenate(steps)[:50]
    assert sorted(first_epoch) == list(range(50))  # each sequence once per epoch
    a, b = BatchSampler(50, 8, 3, rank=0, world=2), BatchSampler(50, 8, 3, rank=1, world=2)
    for i in range(20):
        assert list(np.concatenate([a.indices(i), b.indices(i)])) == list(steps[i])
    assert list(BatchSampler(50, 8, 4).indices(0)) != list(steps[0])
    with pytest.raises(DataError, match="does not split over 3 processes"):
        BatchSampler(50, 8, 3, world=3)


def test_packed_sequences():
    seqs = PackedSequences(np.arange(100, dtype=np.uint16), 16)
    assert seqs.n == 6
    assert seqs.get(np.array([1, 0])).tolist() == [list(range(16, 32)), list(range(16))]
    with pytest.raises(DataError, match="fewer than one sequence of train.seq_len=128"):
        PackedSequences(np.arange(100, dtype=np.uint16), 128)


def test_local_jsonl_text_and_parquet_sources(tmp_path, cache):
    docs = [{"id": i, "text": f"document {i}: " + "the quick brown fox jumps " * (i % 7 + 1)} for i in range(60)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    d = prepare_data(DataConfig(source="files", path=str(tmp_path / "*.jsonl"), validation_fraction=0.1),
                     SMALL, cache)
    assert d.name == tmp_path.name.replace("[", "").replace("]", "") and len(d.validation_texts()) == 6
    assert prepare_data(DataConfig(source="files", path=str(tmp_path / "a.jsonl"), validation_fraction=0.1),
                        SMALL, cache).name == "a"
    assert set(d.validation_texts()) <= {x["text"] for x in docs}
    for i in range(3):
        (tmp_path / f"t{i}.txt").write_text(f"text file {i}\nsecond line\n")
    t = prepare_data(DataConfig(source="files", path=str(tmp_path / "t*.txt"), validation_fraction=0.3),
                     SMALL, cache)
    assert "second line" in t.validation_texts()[0]  # a .txt file is one document
    import pandas as pd

    pd.DataFrame(docs).to_parquet(tmp_path / "p.parquet")
    p = prepare_data(DataConfig(source="files", path=str(tmp_path / "p.parquet"), validation_fraction=0.1),
                     SMALL, cache)
    assert sorted(p.validation_texts()) == sorted(d.validation_texts())
    with pytest.raises(DataError, match="no field 'body'"):
        prepare_data(DataConfig(source="files", path=str(tmp_path / "*.jsonl"), text_field="body"), SMALL, cache)


def test_empty_and_too_small_corpus(tmp_path, cache):
    (tmp_path / "empty.jsonl").write_text(json.dumps({"text": ""}) + "\n")
    with pytest.raises(DataError, match="corpus is empty"):
        prepare_data(DataConfig(source="files", path=str(tmp_path / "empty.jsonl")), SMALL, cache)
    (tmp_path / "one.jsonl").write_text(json.dumps({"text": "only one document"}) + "\n")
    with pytest.raises(DataError, match="need at least 2"):
        prepare_data(DataConfig(source="files", path=str(tmp_path / "one.jsonl")), SMALL, cache)
    with pytest.raises(DataError, match="no files match"):
        prepare_data(DataConfig(source="files", path=str(tmp_path / "nothing*.jsonl")), SMALL, cache)


def test_olmo_tokenizer_from_olmo_eval():
    from ladder.data.tokenizer import load_tokenizer, olmo_tokenizer_file

    try:
        f = olmo_tokenizer_file()
    except DataError:
        pytest.skip("ai2-olmo-eval not installed")
    tok = load_tokenizer(ModelConfig(tokenizer="olmo"))
    assert f.is_file() and tok.eos_token_id is not None and len(tok) > 50_000
    assert tok.decode(tok("Hello world")["input_ids"]) == "Hello world"
