"""Fuzzing the two readers of user files: run logs (W&B CSV exports, run directories) and
recipes. A seeded mutation fuzzer (byte flips, cuts, repeated/dropped lines, hostile values)
over valid inputs; every case must either read into something physically valid or fail with
the reader's own one-line error, never a traceback, and never accept a known-bad input."""

import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.runlog import RunLogError, read_run
from ladder.recipe import RecipeError, load_recipe
from ladder.sweep.plan import SweepError, plan_sweep
from tests.analysis_synthetic import ACC, BPB, write_ladder

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ["nan", "NaN", "inf", "-inf", "", "abc", "1e400", "-1", "7.5", "0x10", "1,2", "true", "null",
           "[]", "{}", "\"x\"", "1e-400", "99999999999999999999999", "-0", ".5"]


def mutate(text: str, rng: random.Random) -> tuple[str, str]:
    """One mutation of ``text``; returns (mutated text, what was done)."""
    lines = text.split("\n")
    kind = rng.choice(["flip", "cut", "dup_line", "drop_line", "swap_lines", "value", "value", "insert"])
    if kind == "flip" and text:
        b = bytearray(text.encode())
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(1, 256)
        return b.decode("utf-8", errors="replace"), kind
    if kind == "cut":
        return text[:rng.randrange(len(text) + 1)], kind
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    if kind == "dup_line":
        return "\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:]), kind
    if kind == "drop_line":
        return "\n".join(lines[:i] + lines[i + 1:]), kind
    if kind == "swap_lines":
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines), kind
    if kind == "insert":
        pos = rng.randrange(len(text) + 1)
        return text[:pos] + rng.choice(HOSTILE + [":", "- ", "\t", "{", "]", "\x00"]) + text[pos:], kind
    sep = "," if "," in lines[i] else ": " if ": " in lines[i] else None
    if sep is None:
        return text, "noop"
    cells = lines[i].split(sep)
    cells[rng.randrange(len(cells))] = rng.choice(HOSTILE)
    lines[i] = sep.join(cells)
    return "\n".join(lines), kind


# ---------------------------------------------------------------------------- run logs


def _physically_valid(run) -> None:
    """What an accepted run guarantees the fit."""
    order = run.evals["tokens" if "tokens" in run.evals else "step"].to_numpy(dtype=float)
    assert np.all(np.isfinite(order)) and np.all(np.diff(order) > 0)  # tokens, else steps (a W&B export)
    for col in (ACC, BPB):
        try:
            v = run.column(col)
        except RunLogError:
            continue
        assert np.all(np.isfinite(v))
        if col == ACC:
            assert np.all((v >= 0) & (v <= 1))
    try:
        assert run.n > 0
    except RunLogError:
        pass


@pytest.fixture(scope="module")
def base_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("ladder")
    return write_ladder(d, sizes=("190M",), mults=(1,), n_evals=8)[0].read_text()


def test_fuzz_csv_reader(base_csv, tmp_path):
    rng = random.Random(1234)
    outcomes = {"read": 0, "refused": 0}
    for case in range(300):
        text, kind = mutate(base_csv, rng)
        p = tmp_path / f"190M-1xC-{case}.csv"
        p.write_text(text, errors="replace")
        try:
            run = read_run(p)
            _physically_valid(run)
            outcomes["read"] += 1
        except RunLogError as e:
            assert str(p) in str(e) and "\n" not in str(e), str(e)
            outcomes["refused"] += 1
    assert outcomes["read"] > 30 and outcomes["refused"] > 30, outcomes  # both paths exercised


def test_known_bad_csv_values_are_refused(base_csv, tmp_path):
    header, *body = base_csv.strip().split("\n")
    cols = header.split(",")
    for col, value, expect in ((ACC, "7.5", "fractions in [0, 1]"), (ACC, "-0.1", "fractions in [0, 1]"),
                               ("throughput/total_tokens", "inf", "NaN/non-numeric"),
                               ("throughput/total_tokens", "1", "not increasing")):
        rows = [r.split(",") for r in body]
        rows[3][cols.index(col)] = value
        p = tmp_path / "190M-1xC.csv"
        p.write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")
        with pytest.raises(RunLogError, match=expect.replace("[", r"\[").replace("]", r"\]")):
            read_run(p)


def test_fuzz_run_directory_reader(tmp_path):
    rng = random.Random(99)
    meta = {"format": "ladder-runlog/1", "name": "tiny-9k-1xC", "n_params": 9000, "target_tokens": 1e6,
            "batch_tokens": 1024, "status": "completed"}
    metrics = "".join(json.dumps({"step": s, "tokens": s * 1024, ACC: 0.3 + s / 1000}) + "\n"
                      for s in range(10, 110, 10))
    for case in range(150):
        d = tmp_path / f"run{case}"
        d.mkdir()
        which = rng.choice(["run.json", "metrics.jsonl"])
        meta_text, metrics_text = json.dumps(meta, indent=1), metrics
        if which == "run.json":
            meta_text, _ = mutate(meta_text, rng)
        else:
            metrics_text, _ = mutate(metrics_text, rng)
        (d / "run.json").write_text(meta_text, errors="replace")
        (d / "metrics.jsonl").write_text(metrics_text, errors="replace")
        try:
            _physically_valid(read_run(d))
        except RunLogError as e:
            assert "\n" not in str(e), str(e)


# ---------------------------------------------------------------------------- recipes


RECIPE_TEXT = (ROOT / "recipes" / "tiny-cpu.yaml").read_text()
TARGET_NUMBERS = ["0", "-5", ".nan", ".inf", "-.inf", "1e-300", "0.0", "9223372036854775808"]


def mutate_recipe(text: str, rng: random.Random) -> tuple[str, str]:
    """:func:`mutate`, or a mistake only a recipe can make: an item of a list repeated (two
    rungs on one run directory), or a target's or seed's number made hostile."""
    lines = text.split("\n")
    kind = rng.choice(["generic", "generic", "repeat_item", "target_number"])
    if kind == "repeat_item":
        i = rng.choice([i for i, ln in enumerate(lines) if re.search(r": \[[^]]+\]", ln)])
        head, items = lines[i].split("[", 1)
        items = [x.strip() for x in items.split("]", 1)[0].split(",")]
        items.insert(rng.randrange(len(items) + 1), rng.choice(items))
        lines[i] = f"{head}[{', '.join(items)}]"
        return "\n".join(lines), kind
    if kind == "target_number":
        i = rng.choice([i for i, ln in enumerate(lines) if "multiplier: " in ln or ln.startswith("seeds:")])
        field = "seeds" if lines[i].startswith("seeds") else rng.choice(["multiplier", "n", "d"])
        value = rng.choice(TARGET_NUMBERS)
        lines[i] = (f"seeds: [{value}]" if field == "seeds" else
                    re.sub(r"multiplier: [^,}]+", f"{field}: {value}", lines[i]))
        return "\n".join(lines), f"{kind} {field}={value}"
    return mutate(text, rng)


def _sweep_can_finish(plan) -> None:
    """What an accepted recipe guarantees the sweep: one run directory per run, targets with
    positive finite N and D, seeds torch and numpy take."""
    names = [r.name for _, r in plan.all_runs()]
    assert len(set(names)) == len(names), names
    for t in plan.targets:
        assert t.n > 0 and math.isfinite(t.d) and t.d > 0 and plan.ladder_flops / t.flops > 0
    assert all(0 <= s < 2**63 for s in plan.recipe.seeds)


def test_fuzz_recipe_loader(tmp_path):
    rng = random.Random(7)
    accepted = refused = 0
    for case in range(250):
        text, kind = mutate_recipe(RECIPE_TEXT, rng)
        p = tmp_path / f"r{case}.yaml"
        p.write_text(text, errors="replace")
        try:
            plan = plan_sweep(load_recipe(p))
        except (RecipeError, SweepError) as e:
            assert str(p) in str(e) and "\n" not in str(e), (kind, str(e))
            refused += 1
            continue
        _sweep_can_finish(plan)
        accepted += 1
    assert accepted > 10 and refused > 50, (accepted, refused)


def test_known_bad_recipes_are_refused(tmp_path):
    top_keys = [ln for ln in RECIPE_TEXT.split("\n") if ln and ln[0].isalpha() and ":" in ln]
    cases = {"empty.yaml": b"", "comments.yaml": b"# nothing here\n", "binary.yaml": bytes(range(256)),
             "latin1.yaml": "name: caf\xe9\n".encode("latin-1"),
             "dup.yaml": (RECIPE_TEXT + top_keys[0] + "\n").encode(),
             "nested_dup.yaml": b"name: a\ntrain:\n  lr: 0.1\n  lr: 0.2\n"}
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(RecipeError, match=str(p).replace(".", r"\.")):
            load_recipe(p)


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_recipes_through_the_cli(tmp_path, seed):
    """A few mutants through `ladder plan`: exit 0 or 2, never a traceback."""
    rng = random.Random(1000 + seed)
    text, kind = mutate(RECIPE_TEXT, rng)
    p = tmp_path / "r.yaml"
    p.write_text(text, errors="replace")
    res = subprocess.run([sys.executable, "-m", "ladder", "plan", str(p)], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.returncode in (0, 2) and "Traceback" not in res.stderr, (kind, res.stderr[-1500:])
    if res.returncode == 2:
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_known_bad_run_json_is_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "tokens": 5}\n')
    for text, expect in (("[]", "expected a JSON object"), ('{"name": ["a"]}', "'name' must be"),
                         ('{"name": "a", "n_params": "abc"}', "'n_params' must be a positive number"),
                         ('{"name": "a", "target_tokens": -1}', "'target_tokens' must be"),
                         ("{", "invalid JSON")):
        (tmp_path / "run.json").write_text(text)
        with pytest.raises(RunLogError, match=expect):
            read_run(tmp_path)
    (tmp_path / "run.json").write_text('{"name": "a", "n_params": 5}')
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "tokens": 5}\n[1, 2]\n')
    with pytest.raises(RunLogError, match="line 2 is not an evaluation row"):
        read_run(tmp_path)


# ---------------------------------------------------------------------------- checkpoint and cache bytes


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Damage as storage and copies make it: flipped bits and bytes, a zeroed 4 KiB block (a
    power loss), random bytes over a stretch, a cut, bytes appended, an emptied file."""
    b = bytearray(data)
    kind = rng.choice(["flip_bit", "flip_bytes", "zero_block", "random_run", "cut", "append", "empty"])
    if kind == "flip_bit" and b:
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif kind == "flip_bytes" and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "zero_block" and b:
        i = rng.randrange(0, len(b), 512)
        b[i:i + 4096] = bytes(len(b[i:i + 4096]))
    elif kind == "random_run" and b:
        i = rng.randrange(len(b))
        b[i:i + 64] = bytes(rng.randrange(256) for _ in b[i:i + 64])
    elif kind == "cut":
        del b[rng.randrange(len(b) + 1):]
    elif kind == "append":
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        b = bytearray()
    return bytes(b), kind


def _fuzz_files(root: Path, files: list[Path], cases: int, seed: int, problem) -> dict[str, int]:
    """Damage one file per case (restored after); ``problem()`` must name every real change."""
    rng = random.Random(seed)
    counts = {"damaged": 0, "detected": 0, "no-op": 0}
    for _ in range(cases):
        f = rng.choice(files)
        original = f.read_bytes()
        damaged, kind = mutate_bytes(original, rng)
        if damaged == original:
            counts["no-op"] += 1
            continue
        f.write_bytes(damaged)
        try:
            found = problem()
        finally:
            f.write_bytes(original)
        counts["damaged"] += 1
        counts["detected"] += found is not None
        assert found is not None, (str(f.relative_to(root)), kind)
    assert problem() is None  # everything restored: intact again
    return counts


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """One real checkpoint of a tiny Olmo2 written by the trainer's writer (no training run)."""
    from types import SimpleNamespace

    import torch
    from transformers import Olmo2Config, Olmo2ForCausalLM

    from ladder.train.saver import take_snapshot, write_snapshot

    torch.manual_seed(0)
    model = Olmo2ForCausalLM(Olmo2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    opt = torch.optim.AdamW(model.parameters())
    model(input_ids=torch.arange(8)[None]).logits.sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    acc = SimpleNamespace(distributed_type="NO", is_main_process=True, process_index=0, num_processes=1,
                          device=torch.device("cpu"), get_state_dict=lambda m: m.state_dict())
    tok = SimpleNamespace(save_pretrained=lambda d: (Path(d) / "tokenizer.json").write_text('{"model": {}}'))
    run = tmp_path_factory.mktemp("ckpt")
    snap = take_snapshot(5, accelerator=acc, model=model, optimizer=opt, scheduler=sched, state={"step": 5},
                         eval_step=True)
    return write_snapshot(snap, run, model=model, tokenizer=tok, barrier=lambda: None, keep_last=1)


def test_fuzz_checkpoint_bytes(checkpoint_dir):
    """Every file of a checkpoint, its manifest included, damaged 400 times: every change found."""
    from ladder.train import checkpoint as ckpt

    run = checkpoint_dir.parent.parent

    def problem():
        found = [c for c in ckpt.list_checkpoints(run) if c.path == checkpoint_dir]
        return ckpt.checkpoint_problem(found[0]) if found else "manifest unreadable"

    files = sorted(p for p in checkpoint_dir.rglob("*") if p.is_file())
    assert len(files) == 11
    counts = _fuzz_files(checkpoint_dir, files, 400, 2024, problem)
    print("checkpoint bytes:", counts)
    assert counts["detected"] == counts["damaged"] > 350, counts


def test_fuzz_dcp_metadata_reader(checkpoint_dir):
    """The allow-list reader over 300 damaged ``.metadata`` files (digests bypassed): each one
    reads as checkpoint metadata or is refused with an exception; none builds anything else."""
    from torch.distributed.checkpoint.metadata import Metadata

    from ladder.train.safe_dcp import load_metadata

    data = (checkpoint_dir / "training_state/optimizer/.metadata").read_bytes()
    rng, counts = random.Random(77), {"read": 0, "refused": 0}
    for _ in range(300):
        damaged, _ = mutate_bytes(data, rng)
        try:
            assert isinstance(load_metadata(damaged), Metadata)
            counts["read"] += 1
        except AssertionError:
            raise
        except Exception:  # noqa: BLE001 - any refusal is fine; what must not happen is a build
            counts["refused"] += 1
    print(".metadata reader:", counts)
    assert counts["refused"] > 100, counts


def test_fuzz_token_cache_bytes(tmp_path):
    """The token cache's four files damaged 200 times: every change found before training."""
    from ladder.data.pipeline import _cache_problem, prepare_data
    from ladder.recipe import DataConfig, ModelConfig

    d = prepare_data(DataConfig(max_bytes=100_000), ModelConfig(tokenizer_vocab_size=300), tmp_path).cache_path
    files = sorted(p for p in d.iterdir() if p.is_file())
    assert [p.name for p in files] == ["meta.json", "train.bin", "val.bin", "val_docs.jsonl"]
    counts = _fuzz_files(d, files, 200, 5, lambda: _cache_problem(d))
    print("token cache bytes:", counts)
    assert counts["detected"] == counts["damaged"] > 170, counts
