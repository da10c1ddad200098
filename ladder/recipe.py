"""Recipes: a ladder described in YAML, read into typed dataclasses and validated.

Every error names the file and the dotted key, and says what was expected, because a recipe
mistake found after a day of GPU time is the expensive kind. ``KEY=VALUE`` overrides from the
command line go through the same validation.

Defaults follow the ladder paper (arXiv 2412.04403, shared README): D = multiplier x 20 x N,
batch ~ 160 (N/108e6)^(2/3) sequences of 2048 tokens, peak LR 0.0047 (N/108e6)^(-1/3) (/4 at
4096 context), warmup N tokens, cosine to 10% of peak, AdamW (0.9, 0.95), weight decay 0.1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ladder.strict_yaml import StrictYAMLError, load_yaml_file, load_yaml_text

MAX_SEED = 2**63  # seeds are signed 64-bit integers where they reach torch and numpy
# Field metadata: keys that may change between restarts (the one rule: ladder/restarts.py).
OPERATIONAL = {"restart": "operational"}  # how or where it runs, never its numbers
LADDER = {"restart": "ladder"}  # which runs the ladder has; a run ignores it, a sweep not


class RecipeError(ValueError):
    """A bad recipe: the message names the file and the key."""


class FieldError(ValueError):
    """A section's field holds an impossible value; the loader adds the file and the section."""

    def __init__(self, key: str, what: str, value: Any):
        self.key, self.what, self.value = key, what, value
        super().__init__(f"'{key}' {what}, got {value!r}")


def need(ok: bool, key: str, what: str, value: Any) -> None:
    """A section's check, next to its fields: raise :class:`FieldError` naming the field."""
    if not ok:
        raise FieldError(key, what, value)


def _preset_names() -> list[str]:
    from ladder.presets import PRESETS
    return list(PRESETS)


# ---------------------------------------------------------------------------- schema


@dataclass
class ModelConfig:
    sizes: list[str] = field(default_factory=lambda: ["tiny-25k"], metadata=LADDER)
    # 'embedded' = a byte-level BPE trained on the corpus and cached; 'olmo' = the OLMo tokenizer
    # JSON shipped in ai2-olmo-eval; otherwise a local directory/tokenizer.json or a hub id.
    tokenizer: str = "embedded"
    tokenizer_vocab_size: int = 1024  # only for tokenizer: embedded
    # Embedding rows: null = the tokenizer's size rounded up to a multiple of 128 (paper presets
    # use 100,352 rows regardless, so their N matches the paper).
    vocab_size: int | None = None
    init_std: float = 0.02

    def __post_init__(self) -> None:
        need(bool(self.sizes), "sizes", "must list at least one size", self.sizes)
        for i, s in enumerate(self.sizes):
            need(s in _preset_names(), f"sizes[{i}]", f"must be a known size ({', '.join(_preset_names())})", s)
        need(self.tokenizer_vocab_size >= 260, "tokenizer_vocab_size",
             "must be >= 260 (256 bytes + special tokens)", self.tokenizer_vocab_size)
        need(self.vocab_size is None or self.vocab_size > 0, "vocab_size", "must be > 0", self.vocab_size)
        need(self.init_std > 0, "init_std", "must be > 0", self.init_std)


@dataclass
class DataConfig:
    # pystdlib: this Python's standard library source files (offline, on every machine);
    # hf: a Hugging Face hub dataset id; files: local jsonl/json/parquet/txt files (globs);
    # tokens: pre-tokenized numpy token files (raw memmap, as OLMo ships its data).
    source: Literal["pystdlib", "hf", "files", "tokens"] = "pystdlib"
    path: str | list[str] | None = None
    name: str | None = None  # validation-set name in metric columns; default from the source
    hf_config: str | None = None
    split: str = "train"
    text_field: str = "text"
    # Cap on the raw text read (pystdlib/hf/files); null = all of it. A cut is reported.
    max_bytes: int | None = None
    # Held out: documents (text), or a seeded sample of whole sequences (token files, unless
    # validation_path is set); the same for every rung and seed.
    validation_fraction: float = 0.05
    validation_path: str | list[str] | None = None  # token files: a separate validation set
    validation_tokens: int = 65_536  # tokens scored at each evaluation
    tokens_dtype: Literal["uint16", "uint32"] = "uint16"
    eos_token_id: int | None = None  # token files only; default: the tokenizer's EOS
    shuffle: bool = True
    # Refuse a run that would read its training data more than this many times (null = never
    # refuse; any repetition is reported). Up to ~4 epochs cost little (Muennighoff et al. 2023).
    max_epochs: float | None = 4.0

    def __post_init__(self) -> None:
        need(self.source == "pystdlib" or self.path is not None, "path",
             f"is required for data.source={self.source!r}", self.path)
        need(self.max_bytes is None or self.max_bytes > 0, "max_bytes", "must be > 0 or null", self.max_bytes)
        need(0 < self.validation_fraction < 0.5, "validation_fraction", "must be in (0, 0.5)",
             self.validation_fraction)
        need(self.validation_tokens > 0, "validation_tokens", "must be > 0", self.validation_tokens)
        need(self.max_epochs is None or self.max_epochs > 0, "max_epochs", "must be > 0 or null",
             self.max_epochs)
        need(self.eos_token_id is None or self.eos_token_id >= 0, "eos_token_id", "must be >= 0",
             self.eos_token_id)


@dataclass
class TrainConfig:
    seq_len: int = 2048
    batch_tokens: int | None = None  # null = paper rule
    micro_batch_size: int = 8  # sequences per process per forward pass
    lr: float | None = None  # peak; null = paper rule
    warmup_tokens: float | None = None  # null = N tokens (paper)
    schedule: Literal["cosine", "wsd"] = "cosine"
    final_lr_fraction: float = 0.1
    decay_fraction: float = 0.2  # wsd: share of each run's steps in its final decay
    decay_shape: Literal["linear", "1-sqrt"] = "linear"  # wsd: LR from peak to final_lr_fraction
    # wsd sweeps: one stable run per size and seed, a decay branch per multiplier off it (false:
    # every rung from scratch; the same numbers, at more compute). A run ignores it.
    branches: bool = field(default=True, metadata=LADDER)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on GPU, fp32 on CPU
    compile: bool = field(default=False, metadata=OPERATIONAL)
    seed: int = 0
    # Intra-op threads on CPU (null = torch's default). Tiny models gain nothing from threads and
    # lose a lot when cores are shared; one thread per run lets a sweep train runs side by side.
    cpu_threads: int | None = field(default=None, metadata=OPERATIONAL)

    def __post_init__(self) -> None:
        need(self.seq_len >= 8, "seq_len", "must be >= 8", self.seq_len)
        need(self.batch_tokens is None or self.batch_tokens >= self.seq_len, "batch_tokens",
             f"must be >= train.seq_len ({self.seq_len})", self.batch_tokens)
        need(self.batch_tokens is None or self.batch_tokens % self.seq_len == 0, "batch_tokens",
             f"must be a multiple of train.seq_len ({self.seq_len})", self.batch_tokens)
        need(self.micro_batch_size > 0, "micro_batch_size", "must be > 0", self.micro_batch_size)
        need(self.lr is None or (0 < self.lr < 1), "lr", "must be in (0, 1)", self.lr)
        need(self.warmup_tokens is None or self.warmup_tokens >= 0, "warmup_tokens", "must be >= 0",
             self.warmup_tokens)
        need(0 <= self.final_lr_fraction <= 1, "final_lr_fraction", "must be in [0, 1]", self.final_lr_fraction)
        need(0 < self.decay_fraction <= 1, "decay_fraction", "must be in (0, 1]", self.decay_fraction)
        need(self.cpu_threads is None or self.cpu_threads >= 1, "cpu_threads", "must be >= 1 or null",
             self.cpu_threads)


@dataclass
class OptimizerConfig:
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1  # not applied to embeddings and norm weights
    grad_clip: float = 1.0
    fused: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas",
             "must be two numbers in [0, 1)", self.betas)
        need(self.eps > 0, "eps", "must be > 0", self.eps)
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0", self.weight_decay)
        need(self.grad_clip > 0, "grad_clip", "must be > 0", self.grad_clip)


@dataclass
class EvaluationConfig:
    count: int = 20  # evenly spaced evaluations per run (plus the final step)
    early: int = 4  # extra log-spaced evaluations before the first evenly spaced one
    interval: int | None = None  # steps; overrides count/early when set
    batch_size: int = field(default=16, metadata=OPERATIONAL)  # validation sequences per pass
    tasks: str | None = None  # downstream tasks (ladder.eval.scorer); null = validation loss only
    task_limit: int | None = None
    task_batch_size: int = field(default=16, metadata=OPERATIONAL)

    def __post_init__(self) -> None:
        need(self.count >= 1, "count", "must be >= 1", self.count)
        need(self.early >= 0, "early", "must be >= 0", self.early)
        need(self.interval is None or self.interval >= 1, "interval", "must be >= 1", self.interval)
        need(self.batch_size >= 1, "batch_size", "must be >= 1", self.batch_size)
        need(self.task_limit is None or self.task_limit >= 1, "task_limit", "must be >= 1", self.task_limit)


@dataclass
class CheckpointConfig:
    interval: int | None = None  # steps; null = at every evaluation step
    # Wall clock: also checkpoint when this long has passed since the last one (checked at the
    # loop's sync points), so a long run between evaluations loses at most this much.
    interval_minutes: float | None = None
    keep_last: int = 2  # full training states kept (older ones are pruned)
    keep_eval_weights: bool = True  # keep model weights of pruned evaluation-step checkpoints
    # Write checkpoints in a background thread (the step waits only for the copy to host memory).
    # auto: with several processes or a GPU; a one-process CPU run would share its cores.
    async_save: bool | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        need(self.interval is None or self.interval >= 1, "interval", "must be >= 1", self.interval)
        need(self.interval_minutes is None or self.interval_minutes > 0, "interval_minutes",
             "must be > 0 or null", self.interval_minutes)
        need(self.keep_last >= 1, "keep_last", "must be >= 1", self.keep_last)


@dataclass
class TrackingConfig:
    wandb: bool = False
    project: str = "ladder"
    entity: str | None = None
    group: str | None = None  # default: the recipe name
    mode: Literal["online", "offline", "disabled"] = "offline"
    log_interval: int = 10  # steps between progress-bar/W&B updates (host syncs)

    def __post_init__(self) -> None:
        need(self.log_interval >= 1, "log_interval", "must be >= 1", self.log_interval)


@dataclass
class SweepConfig:
    """How a sweep runs its rungs (operational: changing it never changes a number)."""

    parallel: int = 1  # local backend: rungs side by side
    max_retries: int = 2  # a failed rung is retried (resuming from its checkpoint) this often
    predict_tasks: str | None = None  # tasks predicted at the end; default: evaluation.tasks

    def __post_init__(self) -> None:
        need(self.parallel >= 1, "parallel", "must be >= 1", self.parallel)
        need(self.max_retries >= 0, "max_retries", "must be >= 0", self.max_retries)


@dataclass
class TargetConfig:
    """A model to predict (used by the sweep): a preset size or an explicit N, and D."""

    name: str
    size: str | None = None
    n: int | None = None
    d: float | None = None
    multiplier: float | None = None
    train: bool = False  # the sweep may train small held-out targets (tiny ladders)

    def __post_init__(self) -> None:
        need(self.size is not None or self.n is not None, "", "needs 'size' or 'n'", self.name)
        need(self.size is None or self.size in _preset_names(), "size",
             f"must be a known size ({', '.join(_preset_names())})", self.size)
        need(self.d is not None or self.multiplier is not None, "", "needs 'd' (tokens) or 'multiplier'",
             self.name)
        need(self.n is None or self.n > 0, "n", "must be a positive parameter count", self.n)
        for key in ("d", "multiplier"):
            v = getattr(self, key)
            need(v is None or (v > 0 and math.isfinite(v)), key, "must be a positive number", v)


@dataclass
class Recipe:
    name: str = field(default="ladder", metadata=LADDER)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    multipliers: list[float] = field(default_factory=lambda: [1.0], metadata=LADDER)
    seeds: list[int] = field(default_factory=lambda: [0], metadata=LADDER)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata=OPERATIONAL)
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata=OPERATIONAL)
    targets: list[TargetConfig] = field(default_factory=list, metadata=LADDER)
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata=OPERATIONAL)
    # Backends' settings, checked by each backend (ladder/sweep/backend.py): SLURM's (cluster
    # defaults, per-size resources) in `slurm:`, any other's in `backends.<name>`.
    slurm: dict[str, Any] = field(default_factory=dict, metadata=OPERATIONAL)
    backends: dict[str, Any] = field(default_factory=dict, metadata=OPERATIONAL)
    # DDP/FSDP, micro-batch and activation checkpointing per size (operational), validated by
    # ladder.train.parallel.
    parallel: dict[str, Any] = field(default_factory=dict, metadata=OPERATIONAL)
    source: str = field(default="<dict>", metadata={"internal": True})

    def __post_init__(self) -> None:
        need(bool(self.multipliers), "multipliers", "must list at least one multiplier", self.multipliers)
        for i, m in enumerate(self.multipliers):
            need(m > 0 and math.isfinite(m), f"multipliers[{i}]", "must be a positive number", m)
        need(bool(self.seeds), "seeds", "must list at least one seed", self.seeds)
        for i, s in enumerate(self.seeds):
            need(0 <= s < MAX_SEED, f"seeds[{i}]", "must be in [0, 2^63)", s)
        names = [tg.name for tg in self.targets]
        for i, tg in enumerate(self.targets):
            need(names.count(tg.name) == 1, f"targets[{i}].name", "must be unique", tg.name)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    def hash(self) -> str:
        """Of every key (run.json's recipe_hash); a sweep's science hash is ladder/restarts.py's."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _convert(value: Any, tp: Any, key: str, src: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float, ...)."""

    def fail() -> typing.NoReturn:
        raise RecipeError(f"{src}: '{key}' must be {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key, src)
            except RecipeError:
                continue
        fail()
    if tp is type(None):
        if value is None:
            return None
        fail()
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        fail()
    if origin is list:
        if not isinstance(value, list):
            fail()
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            fail()
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail()
        return _build(tp, value, key, src)
    if tp in (bool, str) and isinstance(value, tp):
        return value
    if tp in (bool, str):
        fail()
    if tp in (int, float) and isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)  # YAML 1.1 reads 3e-3 (no dot) as a string
    if tp is int:
        if isinstance(value, bool):
            fail()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e6 in YAML
        fail()
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _build(cls: type, data: dict[str, Any], prefix: str, src: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            raise RecipeError(f"{src}: unknown key '{key}' (known: {', '.join(fields)})")
        kwargs[k] = _convert(v, hints[k], key, src)
    missing = [f.name for f in fields.values()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and f.name not in kwargs]
    if missing:
        raise RecipeError(f"{src}: '{prefix + '.' if prefix else ''}{missing[0]}' is required")
    try:
        return cls(**kwargs)
    except FieldError as e:
        key = ".".join(k for k in (prefix, e.key) if k)
        raise RecipeError(f"{src}: '{key}' {e.what}, got {e.value!r}") from None


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    recipe = _build(Recipe, data, "", source)
    recipe.source = source
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe file, applying ``KEY=VALUE`` overrides (dotted keys)."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: recipe file not found")
    try:
        data = load_yaml_file(p)  # duplicate keys, empty and binary files are errors
    except StrictYAMLError as e:
        raise RecipeError(str(e)) from None
    except OSError as e:
        raise RecipeError(f"{p}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe must be a YAML mapping, got {type(data).__name__}")
    data = apply_overrides(data, overrides or [], str(p))
    return from_dict(data, str(p))


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """``train.lr=3e-3`` -> data['train']['lr'] = 3e-3. Values are parsed as YAML scalars/lists;
    unknown keys are caught by the same validation as the file."""
    data = json.loads(json.dumps(data))  # deep copy; the loader bounded its expanded size
    for ov in overrides:
        if "=" not in ov:
            raise RecipeError(f"{source}: override {ov!r} must look like KEY=VALUE (e.g. train.lr=1e-3)")
        key, raw = ov.split("=", 1)
        try:  # bounded like the file: an alias bomb in a value is refused before the copy
            value = load_yaml_text(raw, f"{source}: override {key!r}") if raw != "" else None
        except StrictYAMLError as e:
            raise RecipeError(str(e)) from None
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise RecipeError(f"{source} (override): '{'.'.join(parts[:i + 1])}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return data
