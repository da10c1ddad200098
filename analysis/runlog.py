"""The run-log format: the one contract between training and analysis.

A run directory holds
  run.json       metadata (name, N, D target, multiplier, seed, ...), written atomically;
  metrics.jsonl  one JSON object per evaluation: ``step``, ``tokens`` and metric columns,
                 appended and flushed as written.

The trainer writes through :class:`RunLogWriter`; the analysis reads through :func:`read_run`,
which also imports the OLMo-ladder W&B CSV export. Metric names follow the OLMo-ladder
columns (``eval/downstream_bpb/<task>_<split>_rc_5shot_bpb`` ...), so both are one kind of input.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from analysis.columns import MISSING, as_floats, column_from, show, take
from analysis.files import atomic_write_text, finite_or_none, json_safe
from analysis.rowlog import ROW_CHECK, append_line, format_row, row_problem

FORMAT = "ladder-runlog/1"
RUN_JSON = "run.json"
METRICS_JSONL = "metrics.jsonl"

STEP = "step"
TOKENS = "tokens"
TRAIN_LOSS = "train/CrossEntropyLoss"  # the OLMo column our trainer also writes

# N as the ladder paper counts it (embedding once, no separate head), per size name.
PAPER_N = {
    "190M": 190_354_176,
    "370M": 371_262_464,
    "760M": 758_220_288,
    "1B": 1_279_395_840,
    "3B": 3_169_537_280,  # not in the paper; same counting rule
    "7B": 6_887_575_552,
    "13B": 13_202_396_160,
}
# Target token counts of the paper's target runs.
PAPER_TARGET_D = {
    "7B-4T": 3_945_065_873_408,
    "13B-5T": 5_000_088_518_656,
}
TOKENS_PER_PARAM = 20  # 1xC = 20 tokens per parameter (Chinchilla)

NO_TOKENS = ("{source}: no tokens column ('throughput/total_tokens'): a ladder run needs the "
             "tokens seen at each evaluation. Export that column, add 'batch_size_in_tokens', or "
             "give the tokens per optimizer step (--tokens-per-step N)")

# Column renames applied to the OLMo-ladder W&B export.
_OLMO_COLUMNS = {"_step": STEP, "throughput/total_tokens": TOKENS}


_POSITIVE_FIELDS = ("n_params", "target_tokens", "multiplier", "n_nonembed", "batch_tokens")


class RunLogError(ValueError):
    """Bad run-log input. The message names the file and the column or field."""


@dataclass
class RunMeta:
    name: str
    n_params: int | None = None  # N, as the paper counts it
    target_tokens: float | None = None  # D the run was planned to reach
    size: str | None = None
    multiplier: float | None = None  # D / (20 N)
    seed: int | None = None
    n_nonembed: int | None = None
    batch_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        return {"format": FORMAT, **d, **extra}

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "run.json") -> "RunMeta":
        if not isinstance(d, dict):
            raise RunLogError(f"{source}: expected a JSON object, got {type(d).__name__}")
        d = dict(d)
        d.pop("format", None)
        if "name" not in d:
            raise RunLogError(f"{source}: missing field 'name'")
        if not isinstance(d["name"], str) or not d["name"]:
            raise RunLogError(f"{source}: field 'name' must be a non-empty string, got {d['name']!r}")
        for k in _POSITIVE_FIELDS:  # N, D and batch: physical quantities
            v = d.get(k)
            if v is not None and not (finite_or_none(v) is not None and v > 0):
                raise RunLogError(f"{source}: field '{k}' must be a positive number, got {v!r}")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: d.pop(k) for k in list(d) if k in known}
        return cls(**kwargs, extra=d)


@dataclass
class RunLog:
    """One run: metadata plus its evaluation table, one array per column (float where every
    value is a number, else the values as read), rows sorted by tokens (or steps)."""

    meta: RunMeta
    columns: dict[str, np.ndarray]
    source: str = ""

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def n(self) -> int:
        if self.meta.n_params is None:
            raise RunLogError(f"{self.source}: run '{self.name}' has no N (n_params); "
                              f"set it in run.json or name the size ({', '.join(PAPER_N)})")
        return int(self.meta.n_params)

    @property
    def d(self) -> float:
        """Tokens the run reached (its last evaluation)."""
        return float(self.column(TOKENS)[-1])

    @property
    def n_evals(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def evals(self):
        """The table as a pandas DataFrame, for inspection (the analysis reads :meth:`column`
        and does not import pandas)."""
        import pandas as pd

        return pd.DataFrame(self.columns)

    def has(self, column: str) -> bool:
        return column in self.columns

    def column(self, column: str) -> np.ndarray:
        """A metric column as floats; errors name the file and the column."""
        if column not in self.columns:
            if column == TOKENS:
                raise RunLogError(NO_TOKENS.format(source=self.source))
            raise RunLogError(f"{self.source}: missing column '{column}'")
        values = as_floats(self.columns[column])
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            steps = self.columns[STEP][bad[:5]] if STEP in self.columns else bad[:5]
            raise RunLogError(f"{self.source}: column '{column}' has {bad.size} NaN/non-numeric "
                              f"value(s) (at step {', '.join(show(s) for s in steps)})")
        return values

    def final(self, column: str, last: int = 5) -> float:
        """Mean of the last ``last`` evaluations, as the paper reads a run's end value."""
        return float(np.mean(self.column(column)[-last:]))


# ---------------------------------------------------------------------------- reading


def read_run(path: str | os.PathLike, tokens_per_step: float | None = None) -> RunLog:
    """Read a run directory (run.json + metrics.jsonl) or an OLMo-ladder W&B CSV
    (``tokens_per_step``: for a CSV without a tokens column, see :func:`read_olmo_csv`)."""
    p = Path(path)
    if p.is_dir():
        return read_run_dir(p)
    if not p.exists():
        raise RunLogError(f"{p}: no such file or directory")
    if p.suffix == ".csv":
        return read_olmo_csv(p, tokens_per_step=tokens_per_step)
    if p.name == RUN_JSON or p.name == METRICS_JSONL:
        return read_run_dir(p.parent)
    raise RunLogError(f"{p}: expected a run directory or an OLMo-ladder .csv export")


def read_runs(paths: Iterable[str | os.PathLike], tokens_per_step: float | None = None) -> list[RunLog]:
    runs = [read_run(p, tokens_per_step) for p in paths]
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RunLogError(f"duplicate run names: {', '.join(dup)}")
    return runs


_SIZE_MULT = re.compile(r"^(?P<size>\d+(?:\.\d+)?[MBT])-(?P<mult>\d+(?:\.\d+)?)xC", re.I)
_SIZE_TOKENS = re.compile(r"^(?P<size>\d+(?:\.\d+)?[MB])-(?P<tok>\d+(?:\.\d+)?[BT])", re.I)


def parse_run_name(name: str) -> dict[str, Any]:
    """'190M-5xC' -> size, multiplier; '7B-4T-final' -> size, target D (paper N when known)."""
    out: dict[str, Any] = {}
    m = _SIZE_MULT.match(name)
    if m:
        out["size"] = m["size"].upper()
        out["multiplier"] = float(m["mult"])
    else:
        m = _SIZE_TOKENS.match(name)
        if m:
            out["size"] = m["size"].upper()
            key = f"{out['size']}-{m['tok'].upper()}"
            if key in PAPER_TARGET_D:
                out["target_tokens"] = float(PAPER_TARGET_D[key])
    if out.get("size") in PAPER_N:
        out["n_params"] = PAPER_N[out["size"]]
        if "multiplier" in out:
            out["target_tokens"] = out["multiplier"] * TOKENS_PER_PARAM * out["n_params"]
    return out


def read_csv_columns(path: Path, keep_prefix: str | None = None) -> dict[str, np.ndarray]:
    """A CSV with a header row as columns (see :func:`analysis.columns.column_from`). Blank lines
    are skipped; a short row is padded with missing cells; a row longer than the header is an
    error. With ``keep_prefix``, only rows with a value in some column of that prefix are kept,
    as they are read: a W&B history export's training-step rows never reach memory."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a BOM, as Excel writes
            reader = csv.reader(f)
            header = next((r for r in reader if r), None)
            if header is None:
                raise RunLogError(f"{path}: cannot read as CSV (no header row)")
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise RunLogError(f"{path}: cannot read as CSV (column '{dup[0]}' appears twice)")
            width = len(header)
            need = [i for i, h in enumerate(header) if keep_prefix and h.startswith(keep_prefix)]
            body = []
            for r in reader:
                if len(r) != width:
                    if not r:
                        continue
                    if len(r) > width:
                        raise RunLogError(f"{path}: cannot read as CSV (line {reader.line_num} has "
                                          f"{len(r)} fields, the header {width})")
                    r = r + [""] * (width - len(r))
                # all empty (cheap, the usual training row), or every cell a missing value
                if need and (not any(r[i] for i in need)
                             or all(r[i].strip() in MISSING for i in need)):
                    continue
                body.append(r)
    except (UnicodeDecodeError, csv.Error, OSError) as e:
        raise RunLogError(f"{path}: cannot read as CSV ({' '.join(str(e).split())})") from None
    cells = list(zip(*body)) if body else [()] * width
    return {h: column_from(list(c)) for h, c in zip(header, cells)}


def read_olmo_csv(path: str | os.PathLike, meta: RunMeta | None = None,
                  tokens_per_step: float | None = None) -> RunLog:
    """Import one run of a W&B history export (the OLMo ladder's: one row per evaluation).

    Tokens: the 'throughput/total_tokens' column; else accumulated from '_step' and
    'batch_size_in_tokens'; else '_step' x ``tokens_per_step``; else the run has no tokens, which
    is enough for a target's actual (the mean of its last evaluations) and an error, saying how to
    supply them, wherever tokens are needed. Rows without any 'eval/' value (training-step rows
    of a plain W&B export) are not evaluations and are dropped; rows are ordered by step."""
    p = Path(path)
    cols = read_csv_columns(p, keep_prefix="eval/")
    cols = {_OLMO_COLUMNS.get(k, k): v for k, v in cols.items()}
    has_tokens = TOKENS in cols
    if not has_tokens and STEP not in cols:
        raise RunLogError(f"{p}: missing columns '_step' and 'throughput/total_tokens' (need "
                          f"one of them to order the evaluations)")
    if STEP in cols:
        cols = take(cols, np.argsort(as_floats(cols[STEP]), kind="stable"))  # NaN last
    batch = cols.get("batch_size_in_tokens")
    if batch is not None:
        batch = as_floats(batch)
        if not np.all(np.isfinite(batch) & (batch > 0)):
            raise RunLogError(f"{p}: column 'batch_size_in_tokens' must hold positive finite numbers")
    if not has_tokens and batch is not None:
        cols[TOKENS] = np.cumsum(np.diff(as_floats(cols[STEP]), prepend=0.0) * batch)
    elif not has_tokens and tokens_per_step is not None:
        cols[TOKENS] = as_floats(cols[STEP]) * float(tokens_per_step)
    if STEP not in cols:  # the target export has no _step column
        tokens = as_floats(cols[TOKENS])
        if batch is not None and np.all(np.isfinite(tokens)):
            cols[STEP] = np.round(tokens / batch).astype(np.int64)
        else:
            cols[STEP] = np.arange(len(tokens))  # non-finite tokens are reported by _validated
    if meta is None:
        meta = RunMeta(name=p.stem, **parse_run_name(p.stem))
        if batch is not None and len(batch):
            meta.batch_tokens = int(batch[-1])
    return _validated(RunLog(meta=meta, columns=cols, source=str(p)), "throughput/total_tokens")


def read_run_dir(path: str | os.PathLike) -> RunLog:
    p = Path(path)
    meta_path = p / RUN_JSON
    if not meta_path.exists():
        raise RunLogError(f"{p}: not a run directory (no {RUN_JSON})")
    try:
        meta = RunMeta.from_json(json.loads(meta_path.read_text()), str(meta_path))
    except json.JSONDecodeError as e:
        raise RunLogError(f"{meta_path}: invalid JSON ({e})") from e
    if meta.n_params is None and meta.size in PAPER_N:
        meta.n_params = PAPER_N[meta.size]
    rows = read_metrics_jsonl(p / METRICS_JSONL)
    if meta.extra.get("status") == "completed" and has_torn_tail(p / METRICS_JSONL):
        raise RunLogError(f"{p / METRICS_JSONL}: the last evaluation row is cut short although the run "
                          f"completed; rerun its `ladder train` command to evaluate that step again")
    names = list(dict.fromkeys(k for row in rows for k in row)) or [STEP, TOKENS]
    cols = {k: column_from([row.get(k) for row in rows]) for k in names}
    return _validated(RunLog(meta=meta, columns=cols, source=str(p)))


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl. A torn last line (a write cut by a kill, or one being written
    now) is ignored; any other unparsable line, one that is not an object, or one that fails its
    checksum (:mod:`analysis.rowlog`) is an error."""
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise RunLogError(f"{path}: not a text file ({e})") from None
    lines = text.split("\n")
    rows, kinds = [], set()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            torn_tail = i == len(lines) - 1 and not text.endswith("\n")
            if torn_tail:
                break
            raise RunLogError(f"{path}: line {i + 1} is not valid JSON ({e})") from e
        if not isinstance(row, dict) or finite_or_none(row.get(STEP)) is None:
            raise RunLogError(f"{path}: line {i + 1} is not an evaluation row (a JSON object with "
                              f"a numeric '{STEP}')")
        problem = row_problem(line, row, kinds)
        if problem:
            raise RunLogError(f"{path}: line {i + 1} {problem}")
        row.pop(ROW_CHECK, None)
        rows.append(row)
    return rows


def has_torn_tail(path: Path) -> bool:
    """True if the file's last line was cut short (no final newline)."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def _validated(run: RunLog, tokens_name: str = TOKENS) -> RunLog:
    """``tokens_name``: the tokens column as the input file names it (for error messages). A
    W&B export may lack tokens (see :func:`read_olmo_csv`); its steps must then increase."""
    cols = run.columns
    if STEP not in cols:
        raise RunLogError(f"{run.source}: missing column '{STEP}'")
    if TOKENS not in cols and not run.source.endswith(".csv"):
        raise RunLogError(f"{run.source}: missing column '{TOKENS}'")
    col, name = (TOKENS, tokens_name) if TOKENS in cols else (STEP, "_step")
    values = as_floats(cols[col])
    if len(values) and not np.all(np.isfinite(values)):
        raise RunLogError(f"{run.source}: column '{name}' has NaN/non-numeric values")
    if len(values) > 1 and np.any(np.diff(values) <= 0):
        i = int(np.flatnonzero(np.diff(values) <= 0)[0])
        raise RunLogError(f"{run.source}: column '{name}' is not increasing "
                          f"(row {i + 2}: {values[i + 1]:.6g} after {values[i]:.6g})")
    _check_accuracies(cols, run.source)
    return run


def validated(run: RunLog) -> RunLog:
    """A run log built by another importer (analysis.sources), checked as every reader's are."""
    return _validated(run)


ACCURACY_PREFIX = "eval/downstream/"  # accuracy columns (fractions); bpb etc. live elsewhere


def _check_accuracies(cols: dict[str, np.ndarray], source: str) -> None:
    """Accuracies are fractions in [0, 1]: a percent-scale or corrupted column would fit a
    confident, wrong law."""
    for col, values in cols.items():
        if not str(col).startswith(ACCURACY_PREFIX):
            continue
        v = as_floats(values)
        bad = np.flatnonzero(np.isfinite(v) & ((v < 0) | (v > 1)))
        if bad.size:
            step = show(cols[STEP][bad[0]]) if STEP in cols else bad[0]
            raise RunLogError(f"{source}: column '{col}' has {v[bad[0]]:g} at step {step}; accuracies "
                              f"must be fractions in [0, 1]")


# ---------------------------------------------------------------------------- writing


class RunLogWriter:
    """Writes a run directory (its one writer: the trainer holds the directory's lock).
    Resume-safe: opening repairs a torn last line, and :meth:`resume_at` drops evaluations
    logged after the checkpoint being resumed, so every evaluation is in metrics.jsonl exactly
    once."""

    def __init__(self, run_dir: str | os.PathLike, report=None):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / METRICS_JSONL
        self.report = report or (lambda m: None)
        self.repair()

    def repair(self) -> bool:
        """Cut a torn last line (a write interrupted by a kill) so appends start on a clean line;
        the lost evaluation is re-run by the trainer when it resumes at that step."""
        if not has_torn_tail(self.metrics_path):
            return False
        data = self.metrics_path.read_bytes()
        keep = data.rfind(b"\n") + 1
        with open(self.metrics_path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
        self.report(f"{self.metrics_path}: removed a torn last line ({len(data) - keep} bytes, a write "
                    f"cut by a kill)")
        return True

    def write_meta(self, meta: RunMeta | dict[str, Any]) -> None:
        d = meta.to_json() if isinstance(meta, RunMeta) else {"format": FORMAT, **meta}
        atomic_write_text(self.dir / RUN_JSON, json.dumps(d, indent=2, default=json_safe) + "\n")

    def append(self, row: dict[str, Any]) -> None:
        """One row, appended whole or not at all (:func:`analysis.rowlog.append_line`)."""
        if STEP not in row or TOKENS not in row:
            raise RunLogError(f"{self.metrics_path}: a row needs '{STEP}' and '{TOKENS}'")
        append_line(self.metrics_path, format_row(row).encode())

    def rows(self) -> list[dict[str, Any]]:
        return read_metrics_jsonl(self.metrics_path)

    def resume_at(self, step: int) -> None:
        """Keep the rows with step <= ``step`` (the resumed checkpoint), one per step in step
        order, and drop the rest."""
        by_step = {int(r[STEP]): r for r in self.rows() if int(r[STEP]) <= step}
        rows = [by_step[s] for s in sorted(by_step)]
        atomic_write_text(self.metrics_path, "".join(format_row(r) for r in rows))
