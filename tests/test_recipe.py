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
