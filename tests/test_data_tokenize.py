"""`ladder tokenize`: streamed, multi-process raw text -> token files + manifest, the same for any
number of workers, never left looking complete after a failure, and read by training."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from ladder.data.errors import DataError
from ladder.data.pipeline import prepare_data
from ladder.data.tokenize import tokenize_corpus
from ladder.data.tokenizer import load_tokenizer, train_bpe_tokenizer
from ladder.recipe import DataConfig, ModelConfig


@pytest.fixture(scope="module")
def tok_json(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    train_bpe_tokenizer([f"document {i}: the quick brown fox {i * 3}" for i in range(200)], 300, d)
    return str(d / "tokenizer.json")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Four formats; returns the directory and the documents in the order tokenize reads them."""
    import pandas as pd

    d = tmp_path_factory.mktemp("raw")
    docs = {n: [f"{n} document {i}: " + "the quick brown fox jumps " * (i % 9 + 1) for i in range(k)]
            for n, k in (("a", 60), ("b", 12), ("c", 15))}
    (d / "a.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(docs["a"])))
    with gzip.open(d / "b.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"text": t}) + "\n" for t in docs["b"]))
    pd.DataFrame({"text": docs["c"]}).to_parquet(d / "c.parquet")
    (d / "d.txt").write_text("a plain text file\nis one document\n")
    return d, docs["a"] + docs["b"] + docs["c"] + ["a plain text file\nis one document\n"]


def _all_tokens(out: Path) -> np.ndarray:
    m = json.loads((out / "manifest.json").read_text())
    return np.concatenate([np.fromfile(out / f["path"], dtype=m["dtype"]) for f in m["files"]])


def test_tokens_match_the_tokenizer_in_input_order_for_any_worker_count(tmp_path, tok_json, inputs):
    d, docs = inputs
    tok = load_tokenizer(ModelConfig(tokenizer=tok_json))
    expect = np.concatenate([np.array(tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
                             for t in docs])
    m1 = tokenize_corpus([str(d / "*")], tok, tmp_path / "w1", workers=1, unit_bytes=1500, tokenizer_spec=tok_json)
    m2 = tokenize_corpus([str(d / "*")], tok, tmp_path / "w2", workers=2, unit_bytes=1500, tokenizer_spec=tok_json)
    assert len(m1["files"]) > 4 and m1["files"] == m2["files"]  # a.jsonl is cut into several units
    assert m1["tokens"] == len(expect) and m1["documents"] == len(docs) and m1["dtype"] == "uint16"
    assert np.array_equal(_all_tokens(tmp_path / "w1"), expect)
    for f in m1["files"]:
        assert (tmp_path / "w1" / f["path"]).read_bytes() == (tmp_path / "w2" / f["path"]).read_bytes()
    assert sorted(p.name for p in (tmp_path / "w1").iterdir()) == sorted([f["path"] for f in m1["files"]] + ["manifest.json"])
    # training reads the directory through its manifest
    data = prepare_data(DataConfig(source="tokens", path=str(tmp_path / "w1"), validation_fraction=0.1),
                        ModelConfig(tokenizer=tok_json), tmp_path)
    assert len(data.train) == len(expect) and data.sequences(16)[0].n > 0
    other = tmp_path / "other"
    train_bpe_tokenizer(["something else entirely"] * 50, 280, other)
    with pytest.raises(DataError, match=r"w1 was tokenized with .* not model.tokenizer"):
        prepare_data(DataConfig(source="tokens", path=str(tmp_path / "w1")),
                     ModelConfig(tokenizer=str(other / "tokenizer.json")), tmp_path)
    with pytest.raises(DataError, match="already holds tokenized data"):
        tokenize_corpus([str(d / "*")], tok, tmp_path / "w1")


def test_a_failure_leaves_nothing_that_looks_complete_and_a_rerun_finishes(tmp_path, tok_json, inputs):
    d, docs = inputs
    tok = load_tokenizer(ModelConfig(tokenizer=tok_json))
    src = tmp_path / "src"
    src.mkdir()
    good = (d / "a.jsonl").read_text()
    (src / "a.jsonl").write_text(good)
    (src / "z.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"z.jsonl: a line near byte \d+ is not JSON"):
        tokenize_corpus([str(src / "*.jsonl")], tok, out, unit_bytes=1500)
    assert not out.exists() and (tmp_path / "out.partial").is_dir()
    assert not list((tmp_path / "out.partial").glob("*.tmp"))  # finished parts only, no torn file
    (src / "z.jsonl").write_text('{"text": "fine"}\n{"text": "mended"}\n')
    m = tokenize_corpus([str(src / "*.jsonl")], tok, out, unit_bytes=1500)
    assert m["documents"] == 62 and out.is_dir() and not (tmp_path / "out.partial").exists()
    ref = tokenize_corpus([str(src / "*.jsonl")], tok, tmp_path / "ref", unit_bytes=1500)
    assert np.array_equal(_all_tokens(out), _all_tokens(tmp_path / "ref")) and m["files"] == ref["files"]


def test_an_interrupted_run_resumes_from_its_finished_parts(tmp_path, tok_json, inputs, monkeypatch):
    import ladder.data.tokenize as tk

    d, _ = inputs
    tok = load_tokenizer(ModelConfig(tokenizer=tok_json))
    real, calls = tk._tokenize_unit, []

    def dies_after_two(job):
        calls.append(job[0])
        if len(calls) > 2:
            raise KeyboardInterrupt  # the job is killed
        return real(job)

    monkeypatch.setattr(tk, "_tokenize_unit", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        tokenize_corpus([str(d / "a.jsonl")], tok, tmp_path / "out", unit_bytes=1500)
    assert not (tmp_path / "out").exists()
    calls.clear()
    monkeypatch.setattr(tk, "_tokenize_unit", lambda job: calls.append(job[0]) or real(job))
    m = tokenize_corpus([str(d / "a.jsonl")], tok, tmp_path / "out", unit_bytes=1500)
    assert calls == list(range(2, len(m["files"])))  # the two finished parts were kept
    tokenize_corpus([str(d / "a.jsonl")], tok, tmp_path / "ref", unit_bytes=1500)
    assert np.array_equal(_all_tokens(tmp_path / "out"), _all_tokens(tmp_path / "ref"))


def test_cli_bad_input_exit_2(tmp_path, tok_json, capsys):
    from ladder.cli import main

    code = main(["tokenize", str(tmp_path / "none*.jsonl"), "--tokenizer", tok_json, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "inputs: no files match" in err and "none*.jsonl" in err
    (tmp_path / "x.jsonl").write_text(json.dumps({"body": "no text field"}) + "\n")
    code = main(["tokenize", str(tmp_path / "x.jsonl"), "--tokenizer", tok_json, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "x.jsonl has a document without 'text'" in err and not (tmp_path / "o").exists()
    noeos = tmp_path / "noeos.json"  # the error names the option the user gave, not a recipe key
    data = json.loads(Path(tok_json).read_text())
    data["added_tokens"] = []
    data["model"]["vocab"] = {k: v for k, v in data["model"]["vocab"].items() if not k.startswith("<|")}
    noeos.write_text(json.dumps(data))
    code = main(["tokenize", str(tmp_path / "x.jsonl"), "--tokenizer", str(noeos), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("ladder tokenize: error: --tokenizer: ") and "end-of-text" in err


def _fake_hub_cache(home, repo: str, tokenizer_json: Path) -> None:
    """The Hugging Face cache as a download leaves it: refs/main -> a snapshot, and .no_exist
    markers for the files the repo does not have."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    root = Path(home) / "hub" / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(rev)
    (snap / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    (snap / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"}))
    (root / ".no_exist" / rev).mkdir(parents=True)
    for name in ("config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
                 "chat_template.jinja", "chat_template.json"):
        (root / ".no_exist" / rev / name).touch()


def test_cached_hub_tokenizer_loads_without_contacting_the_hub(tmp_path):
    """A compute node without a network: the cached copy is used as is (the hub client's
    retries cost 46 s per rung before it fell back to the cache)."""
    import os
    import socket
    import subprocess
    import sys
    import threading

    from ladder.data.tokenizer import olmo_tokenizer_file

    _fake_hub_cache(tmp_path / "hf", "acme/tok", olmo_tokenizer_file())
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    contacts = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            contacts.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}")
    code = ("from ladder.data.tokenizer import load_tokenizer; from ladder.recipe import ModelConfig; "
            "t = load_tokenizer(ModelConfig(tokenizer='acme/tok')); print(len(t), t.eos_token_id)")
    try:
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=300)
    finally:
        server.close()
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[0] == "50280", r.stdout  # the cached (GPT-NeoX) tokenizer
    assert contacts == [], f"{len(contacts)} connections to the hub"
