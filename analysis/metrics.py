"""Task names and metric column names, shared by the evaluator (writer) and the analysis (reader).

Names are exactly the OLMo-ladder W&B columns, so the paper's published ladder and our own
run logs are read by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

# MMLU is four subject groups aggregated with these weights (the paper's).
MMLU_WEIGHTS = {"stem": 0.215, "humanities": 0.335, "social_sciences": 0.219, "other": 0.231}


@dataclass(frozen=True)
class TaskSpec:
    """One reported task: a name and the (weighted) run-log sub-tasks it aggregates."""

    name: str
    split: str
    parts: tuple[tuple[str, float], ...]  # (sub-task id like 'mmlu_stem', weight)
    acc_kind: str = "len_norm"  # the paper's accuracy: per-character normalised
    shots: str = "rc_5shot"

    def _col(self, group: str, part: str, suffix: str) -> str:
        return f"eval/{group}/{part}_{self.split}_{self.shots}_{suffix}"

    def columns(self, metric: str) -> list[tuple[str, float]]:
        """(column, weight) pairs for a metric: 'bpb', 'acc', 'soft', 'soft_log'."""
        if metric == "bpb":
            return [(self._col("downstream_bpb", p, "bpb"), w) for p, w in self.parts]
        if metric == "acc":
            return [(self._col("downstream", p, self.acc_kind), w) for p, w in self.parts]
        if metric in ("soft", "soft_log"):
            return [(self._col(f"downstream_{metric}", p, metric), w) for p, w in self.parts]
        raise KeyError(f"unknown task metric '{metric}' (expected bpb, acc, soft, soft_log)")


def _single(name: str, split: str, acc_kind: str = "len_norm") -> TaskSpec:
    return TaskSpec(name, split, ((name, 1.0),), acc_kind)


PAPER_TASKS: dict[str, TaskSpec] = {
    "mmlu": TaskSpec("mmlu", "test", tuple((f"mmlu_{k}", w) for k, w in MMLU_WEIGHTS.items())),
    "hellaswag": _single("hellaswag", "val"),
    "arc_challenge": _single("arc_challenge", "test"),
    "arc_easy": _single("arc_easy", "test"),
    "piqa": _single("piqa", "val"),
    "csqa": _single("csqa", "val"),
    "socialiqa": _single("socialiqa", "val"),
    "openbookqa": _single("openbookqa", "test"),
}

OTHER_TASKS: dict[str, TaskSpec] = {
    "boolq": _single("boolq", "val", acc_kind="acc"),
    "winogrande": _single("winogrande", "val"),
    "arc_easy_val": TaskSpec("arc_easy_val", "val", (("arc_easy", 1.0),)),
    "arc_challenge_val": TaskSpec("arc_challenge_val", "val", (("arc_challenge", 1.0),)),
    "openbookqa_val": TaskSpec("openbookqa_val", "val", (("openbookqa", 1.0),)),
    "mmlu_val": TaskSpec("mmlu_val", "val", tuple((f"mmlu_{k}", w) for k, w in MMLU_WEIGHTS.items())),
}

# In-distribution ranked classification built from the training corpus's validation documents
# (ladder.eval.tasks): the task tiny CPU ladders are predicted on.
CORPUS_TASKS: dict[str, TaskSpec] = {
    "corpus_cont": TaskSpec("corpus_cont", "val", (("corpus_cont", 1.0),), shots="rc_0shot"),
}

TASK_SETS: dict[str, dict[str, TaskSpec]] = {
    "paper": PAPER_TASKS,
    "all": {**PAPER_TASKS, **OTHER_TASKS},
    "corpus": CORPUS_TASKS,
}


def resolve_tasks(spec: str) -> dict[str, TaskSpec]:
    """'paper', 'all', or a comma list of task names -> {name: TaskSpec}."""
    if spec in TASK_SETS:
        return dict(TASK_SETS[spec])
    known = {**TASK_SETS["all"], **CORPUS_TASKS}
    out = {}
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name not in known:
            raise KeyError(f"unknown task '{name}'; known task sets: {', '.join(TASK_SETS)}; "
                           f"known tasks: {', '.join(known)}")
        out[name] = known[name]
    if not out:
        raise KeyError(f"empty task list '{spec}'")
    return out


# Chance accuracy of the paper's tasks (1 / number of choices).
CHANCE_ACCURACY = {"mmlu": 0.25, "mmlu_val": 0.25, "hellaswag": 0.25, "arc_challenge": 0.25,
          "arc_easy": 0.25, "arc_challenge_val": 0.25, "arc_easy_val": 0.25, "piqa": 0.5,
          "csqa": 0.2, "socialiqa": 1 / 3, "openbookqa": 0.25, "openbookqa_val": 0.25,
          "boolq": 0.5, "winogrande": 0.5}
