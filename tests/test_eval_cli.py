"""`ladder eval` end to end on a tiny saved checkpoint: the paper set with --limit 100 (default
suite), the full paper set (slow), and bad input."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, cache):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LADDER_EVAL_CACHE": str(cache),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "ladder", "eval", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random Olmo2 with a small byte-level BPE tokenizer (no BOS/EOS/pad), saved the way the
    trainer saves checkpoints. A small vocabulary keeps the CPU run short."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Olmo2Config, Olmo2ForCausalLM, PreTrainedTokenizerFast

    from ladder.eval.tasks import read_request_docs, request_file, resolve_task_groups

    docs = read_request_docs(request_file(resolve_task_groups("arc_easy")[0].tasks[0]), limit=300)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([d.contexts[0] for d in docs], trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok)
    torch.manual_seed(0)
    cfg = Olmo2Config(vocab_size=1024, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, max_position_embeddings=128, pad_token_id=None,
                      bos_token_id=None, eos_token_id=None)
    path = tmp_path_factory.mktemp("ckpt")
    Olmo2ForCausalLM(cfg).save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


def test_paper_set_limit_100(tiny_checkpoint, tmp_path, olmo_ladder_dir):
    out = tmp_path / "metrics.json"
    r = _run(tiny_checkpoint, "--tasks", "paper", "--limit", 100, "--out", out, "--device", "cpu",
             cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads(out.read_text())
    # every paper column of the OLMo-ladder CSVs is there, under the same name
    header = (olmo_ladder_dir / "190M-1xC.csv").read_text().splitlines()[0].split(",")
    from analysis.metrics import PAPER_TASKS
    wanted = {c for s in PAPER_TASKS.values() for m in ("bpb", "acc", "soft", "soft_log")
              for c, _ in s.columns(m)}
    assert wanted <= set(header) and wanted <= set(metrics)
    for name, v in metrics.items():
        assert math.isfinite(v), name
        if name.startswith("eval/downstream/") or name.startswith("eval/downstream_soft/"):
            assert 0.0 <= v <= 1.0, (name, v)
    # a random model: chance-level accuracy and a task loss far above a trained model's ~1 bpb
    assert 0.1 < metrics["eval/downstream/arc_easy_test_rc_5shot_len_norm"] < 0.45
    assert metrics["eval/downstream_bpb/hellaswag_val_rc_5shot_bpb"] > 2.0
    agg = sum(w * metrics[c] for c, w in PAPER_TASKS["mmlu"].columns("acc"))
    assert metrics["eval/downstream/mmlu_test_rc_5shot_len_norm"] == pytest.approx(agg)


@pytest.mark.slow
def test_full_paper_set(tiny_checkpoint, tmp_path):
    out = tmp_path / "full.json"
    r = _run(tiny_checkpoint, "--tasks", "paper", "--out", out, "--device", "cpu",
             "--batch-size", 64, cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert len(metrics) == (8 + 3) * 6 + 6  # 11 sub-tasks x 6 metrics + the MMLU aggregate
    assert all(math.isfinite(v) for v in metrics.values())


def test_corpus_task_from_a_text_file(tiny_checkpoint, tmp_path):
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps({"text": f"story {i}: " + "the cat sat on the mat. " * (6 + i)}) + "\n"
                           for i in range(8)))
    out = tmp_path / "c.json"
    import importlib.util  # noqa: F401  (the dispatcher uses importlib.util)
    from ladder.cli import main
    assert main(["eval", str(tiny_checkpoint), "--tasks", "corpus", "--corpus-val", str(val),
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert set(json.loads(out.read_text())) == {
        "eval/downstream/corpus_cont_val_rc_0shot_acc", "eval/downstream/corpus_cont_val_rc_0shot_len_norm",
        "eval/downstream/corpus_cont_val_rc_0shot_per_token", "eval/downstream_bpb/corpus_cont_val_rc_0shot_bpb",
        "eval/downstream_soft/corpus_cont_val_rc_0shot_soft",
        "eval/downstream_soft_log/corpus_cont_val_rc_0shot_soft_log"}


def test_bad_input_is_reported(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import importlib.util  # noqa: F401  (the dispatcher uses importlib.util)
    from ladder.cli import main

    monkeypatch.setenv("LADDER_EVAL_CACHE", str(tmp_path))
    out = tmp_path / "x.json"
    assert main(["eval", str(tiny_checkpoint), "--tasks", "arc_easy,nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'nope'" in err and "hellaswag" in err and "known task sets" in err
    assert main(["eval", str(tmp_path), "--out", str(out)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["eval", str(tiny_checkpoint), "--tasks", "corpus", "--out", str(out)]) == 2
    assert "corpus_val_docs" in capsys.readouterr().err
    assert main(["eval", str(tiny_checkpoint), "--tasks", "corpus", "--corpus-val",
                 str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_two_processes_under_accelerate_match_one(tiny_checkpoint, tmp_path):
    """`accelerate launch --num_processes 2`: sharded rows, gathered; same metrics as 1 process."""
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    args = ["--tasks", "arc_easy,winogrande,mmlu", "--limit", 10, "--device", "cpu"]
    r = _run(tiny_checkpoint, *args, "--out", one, cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LADDER_EVAL_CACHE": str(tmp_path / "c2")}
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu",
                        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                        "--dynamo_backend", "no", "-m", "ladder", "eval", str(tiny_checkpoint),
                        *map(str, args), "--out", str(two)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6), k
