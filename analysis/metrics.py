"""Tasks as data: the one task registry, shared by the evaluator (writer) and the analysis (reader).

A task is a declaration: its accuracy column(s) with weights, its own loss column(s) (step 1's
default feature), its chance accuracy (step 2's floor with ``--link-floor chance``, and the line
a ladder must leave before its trend means anything), and what kind of accuracy it is. The OLMES
tasks of the ladder paper are declarations built from the OLMo-ladder W&B column pattern, so the
paper's published ladder and our own run logs are read by the same code; a lab's own tasks are
declared in a YAML file or inferred from its columns (``analysis.taskspec``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Columns = tuple[tuple[str, float], ...]  # (column, weight); weights are normalised when read

# MMLU is four subject groups aggregated with these weights (the paper's).
MMLU_WEIGHTS = {"stem": 0.215, "humanities": 0.335, "social_sciences": 0.219, "other": 0.231}
# corpus_cont: the in-distribution task ladder.eval.tasks builds with this many choices per item
CORPUS_CHOICES = 4
OLMES_ACC_KINDS = ("acc", "len_norm", "per_token")  # the accuracies the evaluator writes


def olmes_column(part: str, split: str, shots: str, metric: str) -> str:
    """An OLMo-ladder column: ``eval/downstream/<part>_<split>_<shots>_<acc kind>`` for an
    accuracy, ``eval/downstream_<metric>/<part>_<split>_<shots>_<metric>`` otherwise."""
    group = "downstream" if metric in OLMES_ACC_KINDS else f"downstream_{metric}"
    return f"eval/{group}/{part}_{split}_{shots}_{metric}"


@dataclass(frozen=True)
class OlmesLayout:
    """Where an OLMES task's columns come from: the parts the evaluator scores (MMLU: four
    subject groups) and their split and shots."""

    split: str
    parts: Columns  # (part id like 'mmlu_stem', weight)
    shots: str = "rc_5shot"
    acc_kind: str = "len_norm"  # the paper's accuracy: per-character normalised

    def columns(self, metric: str) -> Columns:
        return tuple((olmes_column(p, self.split, self.shots, metric), w) for p, w in self.parts)


@dataclass(frozen=True)
class TaskSpec:
    """One reported task, declared by its columns. ``loss`` is the task's own loss (bits per
    byte of the correct answer for OLMES); ``others`` holds further metrics by kind ('soft',
    'soft_log'); ``olmes`` is set for the tasks Ladder's evaluator writes."""

    name: str
    accuracy: Columns
    loss: Columns = ()
    chance: float | None = None
    metric: str = ""  # what the accuracy is: len_norm, acc, acc_norm ... (for readers)
    others: tuple[tuple[str, Columns], ...] = ()
    olmes: OlmesLayout | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a task needs a name, got {self.name!r}")
        if not self.accuracy:
            raise ValueError(f"task '{self.name}': declare at least one accuracy column")
        for kind, cols in (("accuracy", self.accuracy), ("loss", self.loss), *self.others):
            for col, w in cols:
                if not isinstance(col, str) or not col:
                    raise ValueError(f"task '{self.name}': {kind} column {col!r} is not a name")
                if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
                    raise ValueError(f"task '{self.name}': {kind} weight of '{col}' must be a "
                                     f"positive number, got {w!r}")
        if self.chance is not None and not (isinstance(self.chance, (int, float))
                                            and 0 <= self.chance < 1):
            raise ValueError(f"task '{self.name}': chance must be a fraction in [0, 1), got "
                             f"{self.chance!r}")

    def columns(self, metric: str) -> Columns:
        """(column, weight) pairs of a metric: 'acc', 'bpb' (the task's loss), or a further
        declared kind ('soft', 'soft_log')."""
        if metric == "acc":
            return self.accuracy
        if metric in ("bpb", "loss"):
            if not self.loss:
                raise KeyError(f"task '{self.name}' declares no loss column; give --feature val_ce "
                               f"or --feature COLUMN, or declare its `loss:` (--task-spec)")
            return self.loss
        for kind, cols in self.others:
            if kind == metric:
                return cols
        raise KeyError(f"task '{self.name}' has no '{metric}' column (it declares: acc"
                       + (", loss" if self.loss else "") + "".join(f", {k}" for k, _ in self.others)
                       + ")")

    def to_json(self) -> dict:
        return {"name": self.name, "accuracy": [list(c) for c in self.accuracy],
                "loss": [list(c) for c in self.loss], "chance": self.chance, "metric": self.metric,
                "others": {k: [list(c) for c in cols] for k, cols in self.others}}


def olmes_task(name: str, split: str, parts: Columns | None = None, *, acc_kind: str = "len_norm",
               shots: str = "rc_5shot", chance: float | None = None) -> TaskSpec:
    """An OLMES task as the OLMo ladder logs it: accuracy, bits per byte, soft and soft_log."""
    lay = OlmesLayout(split, parts or ((name, 1.0),), shots, acc_kind)
    return TaskSpec(name, lay.columns(acc_kind), lay.columns("bpb"), chance, acc_kind,
                    (("soft", lay.columns("soft")), ("soft_log", lay.columns("soft_log"))), lay)


_MMLU_PARTS = tuple((f"mmlu_{k}", w) for k, w in MMLU_WEIGHTS.items())

PAPER_TASKS: dict[str, TaskSpec] = {
    "mmlu": olmes_task("mmlu", "test", _MMLU_PARTS, chance=0.25),
    "hellaswag": olmes_task("hellaswag", "val", chance=0.25),
    "arc_challenge": olmes_task("arc_challenge", "test", chance=0.25),
    "arc_easy": olmes_task("arc_easy", "test", chance=0.25),
    "piqa": olmes_task("piqa", "val", chance=0.5),
    "csqa": olmes_task("csqa", "val", chance=0.2),
    "socialiqa": olmes_task("socialiqa", "val", chance=1 / 3),
    "openbookqa": olmes_task("openbookqa", "test", chance=0.25),
}

OTHER_TASKS: dict[str, TaskSpec] = {
    "boolq": olmes_task("boolq", "val", acc_kind="acc", chance=0.5),
    "winogrande": olmes_task("winogrande", "val", chance=0.5),
    "arc_easy_val": olmes_task("arc_easy_val", "val", (("arc_easy", 1.0),), chance=0.25),
    "arc_challenge_val": olmes_task("arc_challenge_val", "val", (("arc_challenge", 1.0),), chance=0.25),
    "openbookqa_val": olmes_task("openbookqa_val", "val", (("openbookqa", 1.0),), chance=0.25),
    "mmlu_val": olmes_task("mmlu_val", "val", _MMLU_PARTS, chance=0.25),
}

# In-distribution ranked classification built from the training corpus's validation documents
# (ladder.eval.tasks): the task tiny CPU ladders are predicted on.
CORPUS_TASKS: dict[str, TaskSpec] = {
    "corpus_cont": olmes_task("corpus_cont", "val", shots="rc_0shot", chance=1 / CORPUS_CHOICES),
}

TASK_SETS: dict[str, dict[str, TaskSpec]] = {
    "paper": PAPER_TASKS,
    "all": {**PAPER_TASKS, **OTHER_TASKS},
    "corpus": CORPUS_TASKS,
}

# Chance accuracy (1 / number of choices) of common multiple-choice tasks by their usual names
# (lm-evaluation-harness and OLMES), for tasks inferred from a ladder's columns. Open-vocabulary
# tasks (lambada: predict the last word) have no floor above 0.
KNOWN_CHANCE = {
    "arc_easy": 0.25, "arc_challenge": 0.25, "hellaswag": 0.25, "openbookqa": 0.25, "sciq": 0.25,
    "mmlu": 0.25, "logiqa": 0.25, "race": 0.25, "mathqa": 0.2, "headqa": 0.25, "medmcqa": 0.25,
    "csqa": 0.2, "commonsense_qa": 0.2, "piqa": 0.5, "winogrande": 0.5, "boolq": 0.5, "copa": 0.5,
    "wsc": 0.5, "wsc273": 0.5, "rte": 0.5, "qnli": 0.5, "sst2": 0.5, "wic": 0.5, "mrpc": 0.5,
    "qqp": 0.5, "cb": 1 / 3, "mnli": 1 / 3, "anli_r1": 1 / 3, "anli_r2": 1 / 3, "anli_r3": 1 / 3,
    "socialiqa": 1 / 3, "siqa": 1 / 3, "social_iqa": 1 / 3, "pubmedqa": 1 / 3, "corpus_cont": 0.25,
    "lambada": 0.0, "lambada_openai": 0.0, "lambada_standard": 0.0,
}


def known_chance(name: str) -> float | None:
    """The chance accuracy of a task known by name (its MMLU subsets and '_val'/'_test' splits
    included), else None."""
    base = name.lower()
    for suffix in ("_val", "_test", "_validation"):
        base = base.removesuffix(suffix)
    if base in KNOWN_CHANCE:
        return KNOWN_CHANCE[base]
    for prefix, chance in (("mmlu", 0.25), ("hendrycks", 0.25), ("lambada", 0.0)):
        if base.startswith(prefix):  # subsets: mmlu_stem, hendrycksTest-anatomy, lambada_openai_mt_de
            return chance
    return None


def builtin_tasks() -> dict[str, TaskSpec]:
    return {**TASK_SETS["all"], **CORPUS_TASKS}


def resolve_tasks(spec: str, declared: dict[str, TaskSpec] | None = None,
                  sets: dict[str, tuple[str, ...]] | None = None) -> dict[str, TaskSpec]:
    """'paper', 'all', 'corpus', a declared set, or a comma list of task names (built in or
    ``declared``, a declared task of the same name taking precedence) -> {name: TaskSpec}."""
    declared = declared or {}
    sets = sets or {}
    if spec in sets:
        spec = ",".join(sets[spec])
    elif spec in TASK_SETS and not any(n in declared for n in TASK_SETS[spec]):
        return dict(TASK_SETS[spec])
    names = list(TASK_SETS[spec]) if spec in TASK_SETS else [s.strip() for s in spec.split(",")
                                                             if s.strip()]
    known = {**builtin_tasks(), **declared}
    out = {}
    for name in names:
        if name not in known:
            raise KeyError(f"unknown task '{name}'; known task sets: "
                           f"{', '.join([*TASK_SETS, *sets])}; known tasks: {', '.join(known)}")
        out[name] = known[name]
    if not out:
        raise KeyError(f"empty task list '{spec}'")
    return out
