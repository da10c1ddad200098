import json
import subprocess
import sys
from pathlib import Path

import pytest

from ladder.recipe import EvaluationConfig, RecipeError, from_dict, load_recipe
from ladder.runplan import eval_steps, lr_lambda, paper_batch_tokens, paper_lr, plan_run

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_shipped_recipes_load():
    tiny = load_recipe(ROOT / "recipes/tiny-cpu.yaml")
    assert tiny.data.source == "pystdlib" and tiny.model.tokenizer == "embedded"
    olmo = load_recipe(ROOT / "recipes/olmo-ladder.yaml")
    assert olmo.model.sizes == ["190M", "370M", "760M", "1B"]
    assert olmo.multipliers == [1, 2, 5, 10]
    assert [t.name for t in olmo.targets] == ["7B-4T", "13B-5T"]


@pytest.mark.parametrize("text, key", [
    ("train: {lrr: 0.1}", "train.lrr"),
    ("bogus: 1", "bogus"),
    ("model: {sizes: [tiny-25k], extra: 1}", "model.extra"),
])
def test_unknown_key_names_key_and_file(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert f"unknown key '{key}'" in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("text, key, what", [
    ("train: {lr: fast}", "train.lr", "float or null"),
    ("train: {seq_len: 12.5}", "train.seq_len", "int"),
    ("train: {compile: 1}", "train.compile", "bool"),
    ("train: {schedule: linear}", "train.schedule", "one of 'cosine', 'wsd'"),
    ("multipliers: 2", "multipliers", "list of float"),
    ("optimizer: {betas: [0.9, x]}", "optimizer.betas[1]", "float"),
])
def test_wrong_type(tmp_path, text, key, what):
    p = write(tmp_path, text)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert f"'{key}' must be {what}" in msg and str(p) in msg


@pytest.mark.parametrize("text, key", [
    ("train: {lr: -1.0}", "train.lr"),
    ("multipliers: [1, 0]", "multipliers[1]"),
    ("model: {sizes: [42B]}", "model.sizes[0]"),
    ("model: {sizes: []}", "model.sizes"),
    ("train: {seq_len: 128, batch_tokens: 1000}", "train.batch_tokens"),
    ("data: {source: files}", "data.path"),
    ("data: {validation_fraction: 0.9}", "data.validation_fraction"),
    ("optimizer: {betas: [0.9, 1.5]}", "optimizer.betas"),
    ("checkpoint: {keep_last: 0}", "checkpoint.keep_last"),
    ("targets: [{name: x, size: 7B}]", "targets[0]"),
])
def test_impossible_values(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert f"'{key}'" in str(e.value) and str(p) in str(e.value)


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="must be a YAML mapping"):
        load_recipe(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write(tmp_path, "train: {lr: [\n"))
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_overrides_are_validated_the_same_way():
    r = load_recipe(ROOT / "recipes/tiny-cpu.yaml", ["train.lr=3e-3", "multipliers=[1, 8]",
                                                       "evaluation.tasks=olmes", "tracking.wandb=true"])
    assert r.train.lr == 3e-3 and r.multipliers == [1.0, 8.0] and r.evaluation.tasks == "olmes"
    assert r.tracking.wandb is True
    with pytest.raises(RecipeError, match="unknown key 'train.lrr'"):
        load_recipe(ROOT / "recipes/tiny-cpu.yaml", ["train.lrr=1"])
    with pytest.raises(RecipeError, match="'train.lr' must be"):
        load_recipe(ROOT / "recipes/tiny-cpu.yaml", ["train.lr=abc"])
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        load_recipe(ROOT / "recipes/tiny-cpu.yaml", ["train.lr"])


def test_paper_batch_rule_reproduces_the_ladder():
    # shared README: 190M 524,288; 370M 786,432; 760M 1,310,720; 1B 1,572,864 tokens
    assert paper_batch_tokens(190_354_176, 4096) == 524_288
    assert paper_batch_tokens(371_262_464, 4096) == 786_432
    assert paper_batch_tokens(758_220_288, 4096) == 1_310_720
    assert paper_batch_tokens(1_279_395_840, 4096) == 1_572_864
    b = paper_batch_tokens(25_000, 128)  # tiny: a power-of-two number of sequences
    assert b % 128 == 0 and (b // 128) & (b // 128 - 1) == 0


def test_paper_lr_rule():
    assert paper_lr(108e6, 2048) == pytest.approx(0.0047)
    assert paper_lr(108e6, 4096) == pytest.approx(0.0047 / 4)
    assert paper_lr(8 * 108e6, 2048) == pytest.approx(0.0047 / 2)


def test_plan_and_schedules():
    r = load_recipe(ROOT / "recipes/olmo-ladder.yaml")
    p = plan_run(r, "190M", 1, None, 100_352)
    assert p.n_params == 190_354_176 and p.target_tokens == 20 * 190_354_176
    assert p.total_steps == -(-p.target_tokens // 524_288)
    assert p.warmup_steps == -(-190_354_176 // 524_288)  # warmup = N tokens
    lrs = [lr_lambda(s, p) for s in range(p.total_steps)]
    assert lrs[0] == pytest.approx(1 / p.warmup_steps)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)  # cosine to 10% of peak
    assert all(a >= b - 1e-12 for a, b in zip(lrs[p.warmup_steps:], lrs[p.warmup_steps + 1:]))
    w = load_recipe(ROOT / "recipes/olmo-ladder.yaml", ["train.schedule=wsd", "train.final_lr_fraction=0"])
    pw = plan_run(w, "190M", 1, None, 100_352)
    wl = [lr_lambda(s, pw) for s in range(pw.total_steps)]
    stable_end = pw.total_steps - round(0.2 * pw.total_steps)
    assert all(x == 1.0 for x in wl[pw.warmup_steps:stable_end])
    assert wl[-1] == pytest.approx(0.0)
    assert p.lr == pytest.approx(paper_lr(190_354_176, 4096))
    o = load_recipe(ROOT / "recipes/olmo-ladder.yaml", ["train.lr=1e-3", "train.batch_tokens=1048576"])
    po = plan_run(o, "190M", 2, 3, 100_352)
    assert (po.lr, po.batch_tokens, po.seed, po.name) == (1e-3, 1_048_576, 3, "190M-2xC-s3")


def test_eval_steps_default_and_interval():
    steps = eval_steps(10_000, EvaluationConfig())
    assert len(steps) >= 20 and steps[-1] == 10_000 and steps == sorted(set(steps))
    assert steps[0] < 10_000 / 20  # log-spaced early evaluations
    assert eval_steps(100, EvaluationConfig(interval=30)) == [30, 60, 90, 100]
    assert eval_steps(3, EvaluationConfig()) == [1, 2, 3]


def test_from_dict_defaults_and_hash():
    a, b = from_dict({}), from_dict({"train": {"lr": 0.01}})
    assert a.hash() != b.hash() and a.hash() == from_dict({}).hash()
    assert a.evaluation.tasks is None and a.optimizer.betas == [0.9, 0.95]
    assert a.optimizer.weight_decay == 0.1 and a.optimizer.grad_clip == 1.0


# ---------------------------------------------------------------------------- bounded parsing

BOMB = "\n".join([f"l0: &l0 [{', '.join(['lol'] * 9)}]"] + [
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]) + "\nname: bomb\n"
MEASURE = """
import json, sys, time, tracemalloc
from ladder.cli import main

def command():
    try:
        return main(sys.argv[1:])
    except SystemExit as e:
        return e.code

def peak_rss_mb():  # VmHWM starts afresh at exec; getrusage's maxrss keeps the forking parent's
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

rss0 = peak_rss_mb()
rc = command()  # cold: imports the command's modules
rss = peak_rss_mb() - rss0
t0 = time.perf_counter()
command()  # warm: the refusal itself
seconds = time.perf_counter() - t0
tracemalloc.start()
command()  # traced: what the refusal allocates
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"rc": rc, "seconds": seconds, "peak_mb": peak / 2**20, "rss_growth_mb": rss}))
"""


def test_alias_bomb_is_refused_within_a_second_and_100_mb(tmp_path):
    """9 lines expanding to 9^9 = 387M strings: `ladder plan` used to spend ~55 s and 3.1 GB before
    a MemoryError traceback. Measured around the command in a fresh process: its peak resident
    memory (imports included), then the refusal's time and Python allocations once imported
    (import time on 2 shared cores is noise, not the bound this test guards)."""
    p = write(tmp_path, BOMB)
    res = subprocess.run([sys.executable, "-c", MEASURE, "plan", str(p)], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert m["rc"] == 2 and res.stderr.strip().count("\n") == 2, res.stderr  # once per call
    assert str(p) in res.stderr and "alias" in res.stderr
    assert m["seconds"] < 1.0 and m["peak_mb"] < 100 and m["rss_growth_mb"] < 100, m


@pytest.mark.parametrize("text, what", [
    ("a: &a [x, x]\nb: &b [*a, *a]\nc: {<<: *a}\n", "not valid YAML"),  # merge of a list
    ("x: " + "[" * 60_000, "nest"),  # libyaml: "nesting depth"; PyYAML's own reader: "nested"
    ("\n".join(["l0: &l0 [1]"] + [f"l{i}: &l{i} [*l{i - 1}]" for i in range(1, 100)]), "deeper than 64"),
    ("a: &a {x: 1, y: 2}\n" + "".join(f"b{i}: &b{i} {{" + ", ".join(f"k{j}: *{'a' if i == 0 else f'b{i - 1}'}"
                                                                   for j in range(9)) + "}\n"
                                      for i in range(8)), "more than 100,000 values"),  # mappings
    ("a: &a [1, *a]\n", "contains it"),  # a node that contains itself
    ("train:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 100)), "deeper than 64"),
])
def test_hostile_yaml_is_one_line(tmp_path, text, what):
    p = write(tmp_path, text)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert what in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("reader", ["python", "libyaml"])
def test_both_readers_bound_nesting_and_aliases(reader):
    """PyYAML's own reader (where libyaml is missing) scans '[' in time quadratic in their depth
    and recurses per level: it is capped as it reads, not after a RecursionError."""
    from ladder.strict_yaml import READERS, StrictYAMLError, load_yaml_text

    if reader not in READERS:
        pytest.skip("PyYAML without libyaml")
    for text, what in (("x: " + "[" * 60_000, "nest"), ("- " * 30_000 + "x", "nest"),
                       ("x:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 300)), "nest"),
                       (BOMB, "more than 100,000 values"), ("a: 1\na: 2\n", "given twice")):
        with pytest.raises(StrictYAMLError, match=what):
            load_yaml_text(text, "r.yaml", reader)
    assert load_yaml_text((ROOT / "recipes/olmo-ladder.yaml").read_text(), "r", reader)["name"] == "olmo-ladder"


def test_size_cap_and_bombs_in_overrides(tmp_path):
    from ladder.strict_yaml import MAX_BYTES

    big = write(tmp_path, "name: big\n" + "#" * MAX_BYTES + "\n")
    with pytest.raises(RecipeError, match="larger than 64 KiB"):
        load_recipe(big)
    levels = ["&l0 [" + ", ".join(["1"] * 10) + "]"] + [
        f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 6)]
    value = "[" + ", ".join(levels) + "]"  # 10^6 values in six short lists
    with pytest.raises(RecipeError, match=r"override 'multipliers': more than 100,000 values"):
        load_recipe(ROOT / "recipes/tiny-cpu.yaml", [f"multipliers={value}"])
    ok = load_recipe(ROOT / "recipes/tiny-cpu.yaml", ["model.sizes=[&s tiny-9k]", "targets=[]"])
    assert ok.model.sizes == ["tiny-9k"]  # anchors themselves are fine


# ---------------------------------------------------------------------------- plan-time checks


@pytest.mark.parametrize("override, key", [
    ("targets=[{name: t, n: 0, d: 1e9}]", "targets[0].n"),
    ("targets=[{name: t, size: tiny-82k, multiplier: 0}]", "targets[0].multiplier"),
    ("targets=[{name: t, n: 1000, d: -5}]", "targets[0].d"),
    ("targets=[{name: t, n: 1000, d: .nan}]", "targets[0].d"),
    ("targets=[{name: t, size: tiny-82k, multiplier: .inf}]", "targets[0].multiplier"),
    ("seeds=[0, -1]", "seeds[1]"),
    ("seeds=[9223372036854775808]", "seeds[0]"),
    ("multipliers=[1, 2, 1.0]", "multipliers[2]"),
    ("multipliers=[1, 1.0000001]", "multipliers[1]"),  # different numbers, one run name (1xC)
    ("model.sizes=[tiny-9k, tiny-25k, tiny-9k]", "model.sizes[2]"),
    ("seeds=[3, 3]", "seeds[1]"),
    ("targets=[{name: a, size: tiny-82k, multiplier: 1, train: true}, "
     "{name: b, size: tiny-82k, multiplier: 1, train: true}]", "targets[1]"),  # one run directory
])
def test_plan_refuses_what_would_fail_the_sweep(ladder_here, override, key):
    """Each of these passed `plan` and `--dry-run` and failed later (ZeroDivisionError, a seed
    torch refuses, two rungs on one run directory whose lock admits only one)."""
    recipe = ROOT / "recipes/tiny-cpu.yaml"
    r = ladder_here("plan", recipe, override)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and f"'{key}'" in r.stderr and str(recipe) in r.stderr, r.stderr


def test_sweep_dry_run_refuses_a_repeated_multiplier(ladder_here, tmp_path):
    r = ladder_here("sweep", ROOT / "recipes/tiny-cpu.yaml", "--dry-run", "--out", tmp_path / "s",
                    "multipliers=[1, 2, 2]")
    assert r.returncode == 2 and "'multipliers[2]'" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "s").exists()
