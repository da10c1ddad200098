"""Turn a W&B ladder project (like the paper's `ai2-llm/olmo-ladder`) into run directories.

Each W&B run becomes ``OUT/<run name>/`` (run.json + metrics.jsonl, written through
:class:`analysis.runlog.RunLogWriter`), so `ladder predict` reads an imported ladder exactly
like one we trained. The conversion takes any object with wandb's ``Api.runs`` / ``Run``
interface (``.name .id .config .state .url .scan_history()``), so it is tested on recorded
history with no network, and the real :class:`wandb.Api` is only the default.

Why the care below: W&B history is sparse (training rows without evaluations), resumes can
log a step twice, token counters are sometimes missing, and an import killed half-way must
never leave a directory that looks like a complete run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from analysis.runlog import (PAPER_N, RUN_JSON, STEP, TOKENS, RunLogError, RunLogWriter, RunMeta,
                             parse_run_name, read_run_dir)

DEFAULT_TOKEN_KEYS = ("throughput/total_tokens", "tokens")  # OLMo trainer, then ours
DEFAULT_STEP_KEY = "_step"
DEFAULT_EVAL_PREFIXES = ("eval/",)
BATCH_TOKEN_COLUMN = "batch_size_in_tokens"
# Config keys (flattened with '.') that hold tokens per optimizer step, most specific first.
BATCH_TOKEN_CONFIG_KEYS = ("batch_size_in_tokens", "batch_tokens", "train.batch_tokens")
# ... or sequences per step times sequence length (the OLMo trainer's config).
BATCH_SEQ_CONFIG_KEYS = ("global_train_batch_size", "train.global_batch_size")
SEQ_LEN_CONFIG_KEYS = ("model.max_sequence_length", "max_sequence_length", "train.seq_len", "seq_len")
META_CONFIG_KEYS = ("n_params", "size", "multiplier", "target_tokens", "seed", "n_nonembed",
                    "batch_tokens")


class WandbImportError(RuntimeError):
    """An import problem; the message names the run (and key) and what was expected."""


@dataclass
class ImportOptions:
    name_filter: str | None = None  # regex searched in the run name
    mongo: dict[str, Any] | None = None  # extra server-side filters for Api.runs
    states: tuple[str, ...] = ()  # keep only runs in these states (e.g. "finished")
    token_keys: tuple[str, ...] = DEFAULT_TOKEN_KEYS
    step_key: str = DEFAULT_STEP_KEY
    eval_prefixes: tuple[str, ...] = DEFAULT_EVAL_PREFIXES
    batch_tokens: int | None = None  # tokens per step, when the history has no token counter
    n_params: tuple[tuple[str, int], ...] = ()  # (run-name regex, N) overrides
    force: bool = False  # re-import runs that are already imported
    duplicates: str = "merge"  # same-named runs: "merge" their histories, or "error"
    page_size: int = 1000


@dataclass
class RunResult:
    name: str
    status: str  # imported | skipped | empty | failed
    message: str = ""
    path: Path | None = None
    rows: int = 0
    dropped: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- the real API


def open_api(timeout: int = 20, api_key: str | None = None):
    """``wandb.Api`` with a bounded timeout, and the two usual failures (no key, no network)
    turned into one actionable message instead of a traceback or a hang."""
    import wandb

    _bound_retries(wandb, timeout)
    try:
        return wandb.Api(timeout=timeout, api_key=api_key)
    except Exception as e:  # wandb raises UsageError / AuthenticationError / CommError
        raise WandbImportError(
            f"cannot connect to W&B ({type(e).__name__}: {e}). The import reads the W&B server: "
            f"it needs network access and an API key (`wandb login` or WANDB_API_KEY; "
            f"WANDB_BASE_URL for a private server)") from e


def _bound_retries(wandb, timeout: int) -> None:
    """wandb-core retries a failed request for minutes by default, and at exit the process
    waits for it: an unreachable server left the command hanging after its one-line error.
    A few retries, none waiting past the timeout; a user's WANDB__GRAPHQL_* settings win."""
    values = {"x_graphql_retry_max": 5, "x_graphql_retry_wait_max_seconds": float(timeout),
              "x_graphql_timeout_seconds": float(timeout)}
    values = {k: v for k, v in values.items() if not os.environ.get("WANDB__" + k[2:].upper())}
    if values:
        wandb.setup(wandb.Settings(**values))


# ---------------------------------------------------------------------------- conversion


def flatten_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """W&B config as flat 'a.b' keys; unwraps the API's {'value': x, 'desc': ...} cells."""
    out: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and set(v) <= {"value", "desc"} and "value" in v:
            v = v["value"]
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            out[prefix] = v

    walk("", dict(config or {}))
    return out


def _number(v: Any) -> float | None:
    """A finite float, or None for missing / NaN / inf / non-numeric (media, strings)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str):
        try:
            x = float(v)
        except ValueError:
            return None
    elif hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy scalars
        x = float(v.item())
    else:
        return None
    return x if math.isfinite(x) else None


def _config_batch_tokens(cfg: dict[str, Any]) -> tuple[int | None, str]:
    for k in BATCH_TOKEN_CONFIG_KEYS:
        x = _number(cfg.get(k))
        if x:
            return int(x), f"config '{k}'"
    for bk in BATCH_SEQ_CONFIG_KEYS:
        for sk in SEQ_LEN_CONFIG_KEYS:
            b, s = _number(cfg.get(bk)), _number(cfg.get(sk))
            if b and s:
                return int(b * s), f"config '{bk}' x '{sk}'"
    return None, ""


@dataclass
class Converted:
    rows: list[dict[str, Any]]
    dropped: list[str]
    tokens_from: str
    n_history_rows: int
    batch_tokens: int | None


def convert_history(run_name: str, history: Iterable[dict[str, Any]], config: dict[str, Any],
                    opts: ImportOptions) -> Converted:
    """W&B history rows -> run-log rows (``step``, ``tokens``, numeric metrics), one per step
    with evaluation metrics, sorted, tokens strictly increasing. ``dropped`` says what went."""
    cfg = flatten_config(config)
    evals: list[dict[str, Any]] = []
    n_rows = 0
    for raw in history:
        n_rows += 1
        row = {k: x for k, v in raw.items() if (x := _number(v)) is not None}
        if any(k.startswith(opts.eval_prefixes) for k in row):
            evals.append(row)
    dropped: list[str] = []
    if not evals:
        return Converted([], dropped, "", n_rows, None)

    token_key = next((k for k in opts.token_keys if any(k in r for r in evals)), None)
    batch, batch_from = (opts.batch_tokens, "--batch-tokens") if opts.batch_tokens else \
        _config_batch_tokens(cfg)
    if token_key is None and batch is None and not any(BATCH_TOKEN_COLUMN in r for r in evals):
        raise WandbImportError(
            f"run '{run_name}': no token count: none of the history keys "
            f"{', '.join(repr(k) for k in opts.token_keys)} is logged with the evaluations, and "
            f"tokens per step cannot be derived (no '{BATCH_TOKEN_COLUMN}' column, no config key "
            f"{', '.join(BATCH_TOKEN_CONFIG_KEYS)} or {BATCH_SEQ_CONFIG_KEYS[0]} x "
            f"{SEQ_LEN_CONFIG_KEYS[0]}). Pass --tokens-key KEY or --batch-tokens N")

    out: list[dict[str, Any]] = []
    for i, r in enumerate(evals):
        step = r.pop(opts.step_key, None)
        if step is None:
            dropped.append(f"eval row {i + 1}: no '{opts.step_key}'")
            continue
        if token_key is not None:
            tokens = r.pop(token_key, None)
        else:
            b = batch if opts.batch_tokens else (r.get(BATCH_TOKEN_COLUMN) or batch)
            tokens = step * b if b else None
        if tokens is None:
            dropped.append(f"step {int(step)}: no '{token_key}' value (NaN or missing)")
            continue
        for k in [k for k in r if k.startswith("_")]:  # W&B bookkeeping (_runtime, _timestamp)
            r.pop(k)
        out.append({STEP: int(step), TOKENS: int(tokens) if float(tokens).is_integer() else tokens,
                    **r})
    tokens_from = (f"history '{token_key}'" if token_key else
                   f"step x {batch_from or repr(BATCH_TOKEN_COLUMN)}")

    # A resumed run may log a step again: the later row is the one the run continued from.
    by_step: dict[int, dict[str, Any]] = {}
    for r in out:
        if r[STEP] in by_step:
            dropped.append(f"step {r[STEP]}: logged more than once, kept the last")
        by_step[r[STEP]] = r
    rows: list[dict[str, Any]] = []
    for step in sorted(by_step):
        r = by_step[step]
        if rows and r[TOKENS] <= rows[-1][TOKENS]:
            dropped.append(f"step {step}: tokens {r[TOKENS]:.6g} not above the previous "
                           f"evaluation's {rows[-1][TOKENS]:.6g}")
            continue
        rows.append(r)
    if batch is None and rows and rows[-1].get(BATCH_TOKEN_COLUMN):
        batch = int(rows[-1][BATCH_TOKEN_COLUMN])  # as read_olmo_csv reads the CSV export
    return Converted(rows, dropped, tokens_from, n_rows, batch)


def _name_fields(name: str) -> dict[str, Any]:
    """parse_run_name on the name, or on its first '-'/'_'-separated suffix that parses, so
    'peteish-190M-5xC' reads as 190M at 5xC."""
    parts = re.split(r"(?<=[-_])", name)
    for i in range(len(parts)):
        fields = parse_run_name("".join(parts[i:]))
        if fields.get("size"):
            return fields
    return {}


def run_meta(name: str, runs: list[Any], cfg: dict[str, Any], conv: Converted,
             opts: ImportOptions) -> RunMeta:
    """RunMeta from (in priority order) --n-params overrides, a config that carries our own
    run.json fields (runs trained by this harness), and the run name (paper sizes)."""
    fields = _name_fields(name)
    source = "name" if "n_params" in fields else None
    for key in META_CONFIG_KEYS:
        x = cfg.get(key)
        if x is not None and not (isinstance(x, float) and not math.isfinite(x)):
            fields[key] = x
            if key == "n_params":
                source = "config"
    for pattern, n in opts.n_params:
        if re.search(pattern, name):
            fields["n_params"] = int(n)
            source = f"--n-params {pattern}"
            if fields.get("multiplier") is not None:
                fields["target_tokens"] = float(fields["multiplier"]) * 20 * int(n)
            break
    if fields.get("n_params") is None and fields.get("size") in PAPER_N:
        fields["n_params"] = PAPER_N[fields["size"]]
        source = "size"
    if "batch_tokens" not in fields and conv.batch_tokens:
        fields["batch_tokens"] = conv.batch_tokens
    last = runs[-1]
    extra = {
        "source": "wandb",
        "wandb_id": last.id,
        "wandb_url": getattr(last, "url", None),
        "wandb_state": getattr(last, "state", None),
        "wandb_config": dict(last.config or {}),
        "n_params_source": source,
        "tokens_from": conv.tokens_from,
        "dropped_rows": conv.dropped,
    }
    if len(runs) > 1:
        extra["wandb_merged_ids"] = [r.id for r in runs]
    known = {f for f in RunMeta.__dataclass_fields__ if f not in ("name", "extra")}
    meta = RunMeta(name=name, **{k: v for k, v in fields.items() if k in known}, extra=extra)
    if meta.n_params is not None:
        meta.n_params = int(meta.n_params)
    return meta


def safe_dir_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+=-]", "_", name).strip(".")
    if not cleaned:
        raise WandbImportError(f"run name {name!r} gives an empty directory name")
    return cleaned


def write_run_dir(target: Path, meta: RunMeta, rows: list[dict[str, Any]], force: bool) -> None:
    """Write into a hidden temp directory next to ``target`` and rename it into place, so a
    killed import never leaves a run directory that looks complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    old = None
    try:
        w = RunLogWriter(tmp)
        with open(w.metrics_path, "w") as f:  # one write + fsync; the dir is not live yet
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
        w.write_meta(meta)
        read_run_dir(tmp)  # the result must be readable by the analysis, or nothing is kept
        if target.exists():
            if not force:
                raise WandbImportError(f"{target}: exists (use --force to replace it)")
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / "run")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old / "run", target)  # put the previous import back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _already_imported(target: Path) -> dict[str, Any] | None:
    try:
        return json.loads((target / RUN_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_dir_for(name: str, runs: list[Any], out_dir: Path, taken: set[str]) -> Path:
    """``OUT/<cleaned name>``, or ``<cleaned name>-<oldest W&B id>`` where another run holds or
    claimed it ('a/b', 'a b' -> 'a_b'; sharing one lost a run or let --force overwrite it)."""
    base = safe_dir_name(name)
    own = [base, f"{base}-{safe_dir_name(runs[0].id)}"]
    holders = [(_already_imported(out_dir / d) or {}).get("name") for d in own]
    for d, holder in zip(own, holders):
        if holder == name:
            return out_dir / d
    if base not in taken and holders[0] is None:
        return out_dir / base
    if holders[1] is not None:
        raise WandbImportError(f"run '{name}': {out_dir / own[0]} and {out_dir / own[1]} hold "
                               f"other runs ('{holders[0]}', '{holders[1]}'); import it elsewhere")
    return out_dir / own[1]


def import_run(name: str, runs: list[Any], out_dir: Path, opts: ImportOptions,
               taken: set[str] = frozenset()) -> RunResult:
    """Import one ladder run (several W&B runs when a restart reused the name); ``taken``: the
    directories of this import's earlier runs."""
    target = run_dir_for(name, runs, out_dir, taken)
    for stale in out_dir.glob(f".{target.name}.tmp-*"):  # left by a killed import
        shutil.rmtree(stale, ignore_errors=True)
    prev = _already_imported(target)
    if prev is not None and not opts.force and prev.get("wandb_state") != "running":
        return RunResult(name, "skipped", "already imported (--force to re-import)", target)

    def history():
        for r in runs:  # oldest first, so a restart's rows replace the crashed run's
            yield from r.scan_history(page_size=opts.page_size)

    cfg = flatten_config(runs[-1].config)
    conv = convert_history(name, history(), runs[-1].config, opts)
    if not conv.rows:
        why = (f"no evaluation rows (no history key starting with "
               f"{' or '.join(repr(p) for p in opts.eval_prefixes)} in {conv.n_history_rows} rows)")
        if conv.dropped:
            why = f"all {len(conv.dropped)} evaluation rows dropped: {conv.dropped[0]}"
        return RunResult(name, "empty", why, None, dropped=conv.dropped)
    meta = run_meta(name, runs, cfg, conv, opts)
    write_run_dir(target, meta, conv.rows, force=prev is not None)
    msg = f"{len(conv.rows)} evaluations, tokens from {conv.tokens_from}"
    if meta.n_params is None:
        msg += "; no N (name has no known size: use --n-params or set n_params in run.json)"
    if len(runs) > 1:
        msg += f"; merged {len(runs)} W&B runs ({', '.join(r.id for r in runs)})"
    return RunResult(name, "imported", msg, target, rows=len(conv.rows), dropped=conv.dropped)


def server_filters(opts: ImportOptions) -> dict[str, Any] | None:
    """The Api.runs mongo filter: --mongo, AND the name regex and states (the same filters are
    also applied here, so a server that ignores them changes nothing)."""
    parts: list[dict[str, Any]] = []
    if opts.mongo:
        parts.append(opts.mongo)
    if opts.name_filter:
        parts.append({"display_name": {"$regex": opts.name_filter}})
    if opts.states:
        parts.append({"state": {"$in": list(opts.states)}})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def list_runs(api: Any, path: str, opts: ImportOptions) -> dict[str, list[Any]]:
    """The project's runs that pass the filters, grouped by name, oldest first."""
    if path.count("/") != 1 or not all(path.split("/")):
        raise WandbImportError(f"project path {path!r}: expected ENTITY/PROJECT")
    try:
        rx = re.compile(opts.name_filter) if opts.name_filter else None
    except re.error as e:
        raise WandbImportError(f"--filter {opts.name_filter!r}: invalid regex ({e})") from e
    try:
        runs = list(api.runs(path, filters=server_filters(opts), order="+created_at"))
    except WandbImportError:
        raise
    except Exception as e:
        raise WandbImportError(f"cannot list the runs of W&B project '{path}' "
                               f"({type(e).__name__}: {e})") from e
    groups: dict[str, list[Any]] = {}
    for r in runs:
        if rx and not rx.search(r.name):
            continue
        if opts.states and getattr(r, "state", None) not in opts.states:
            continue
        groups.setdefault(r.name, []).append(r)
    dup = {n: g for n, g in groups.items() if len(g) > 1}
    if dup and opts.duplicates == "error":
        first = next(iter(dup))
        raise WandbImportError(
            f"{len(dup)} run name(s) are used by several W&B runs, e.g. '{first}' "
            f"({', '.join(r.id for r in dup[first])}); use --duplicates merge to merge their "
            f"histories (later runs win on repeated steps) or --filter/--mongo to pick one")
    return groups


def import_project(path: str, out_dir: str | os.PathLike, opts: ImportOptions | None = None,
                   api: Any = None, log: Callable[[str], None] = print) -> list[RunResult]:
    """Import every selected run of ``ENTITY/PROJECT`` into ``out_dir``. One run's failure
    does not stop the others; it is reported in its :class:`RunResult`."""
    opts = opts or ImportOptions()
    api = api if api is not None else open_api()
    out = Path(out_dir)
    groups = list_runs(api, path, opts)
    if not groups:
        log(f"no runs in '{path}' match the filters")
    results: list[RunResult] = []
    taken: set[str] = set()
    for name, runs in groups.items():
        try:
            res = import_run(name, runs, out, opts, taken)
        except (WandbImportError, RunLogError, OSError) as e:
            res = RunResult(name, "failed", str(e))
        except Exception as e:  # a W&B/network error mid-history: report, go on
            res = RunResult(name, "failed", f"run '{name}': {type(e).__name__}: {e}")
        taken.update([res.path.name] if res.path else [])
        log(f"{res.status:>8}  {name}: {res.message}")
        for d in res.dropped[:10]:
            log(f"          dropped {d}")
        if len(res.dropped) > 10:
            log(f"          ... and {len(res.dropped) - 10} more dropped rows (listed in run.json)")
        results.append(res)
    return results
