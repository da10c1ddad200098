"""The next feature is one new file: a step-1 law (one module and one registry line) and a task
(one declaration file) go through the real `ladder predict`. The backend trace is in
tests/test_backends.py; docs/extending.md walks all three."""

import json

import numpy as np
import pytest

from analysis.laws.registry import STEP1_LAWS
from analysis_synthetic import ACC, BPB, LAW, write_ladder

# The new file: L(C) = A / C^alpha (no irreducible term), written against Law's public interface.
NEW_LAW = '''
import numpy as np

from analysis.laws import Law


class PurePowerOfCompute(Law):
    """L(C) = A / C^alpha, C = 6ND: log L = a - alpha (log C - mean log C)."""

    param_names = ("A", "alpha")

    def __init__(self, delta=1e-3):
        self.delta = delta

    @staticmethod
    def inputs(n, d):
        return (6.0 * np.atleast_1d(np.asarray(n, float)) * np.atleast_1d(np.asarray(d, float)),)

    def set_scale(self, c):
        self.center_ = float(np.mean(np.log(c)))

    def features(self, c):
        return (np.log(np.asarray(c, float)) - self.center_)[None, :]

    def model(self, theta, F):
        x = F[0][None, :]
        pred = theta[:, 0:1] - theta[:, 1:2] * x
        J = np.stack([np.ones_like(pred), -np.broadcast_to(x, pred.shape)], axis=-1)
        return pred, J

    def to_target_space(self, y):
        return np.log(y)

    def from_target_space(self, z):
        return np.exp(z)

    def starts(self, F, z, w):
        return np.array([[float(np.mean(z)), a] for a in (0.02, 0.1, 0.3, 0.6)])

    def bounds(self, F, z):
        return np.array([[-50.0, 50.0], [0.0, 5.0]])

    def named(self, t):
        return {"A": float(np.exp(t[0] + t[1] * self.center_)), "alpha": float(t[1])}
'''

TARGET = ["--target-name", "3B", "--target-n", "3e9", "--target-d", "6e10"]
QUICK = ["--n-boot", "40", "--no-plots", "--calibration", "none"]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    return write_ladder(tmp_path_factory.mktemp("ladder"), n_evals=12)


def test_a_new_step1_law_is_one_file_and_one_registry_line(ladder, tmp_path, monkeypatch,
                                                           ladder_here):
    (tmp_path / "pure_power_law.py").write_text(NEW_LAW)  # the one new file
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(STEP1_LAWS, "pure_power", "pure_power_law:PurePowerOfCompute")  # the line
    r = ladder_here("predict", *ladder, "--tasks", "hellaswag", "--step1", "pure_power", *TARGET,
                    *QUICK, "--out", tmp_path / "p")
    assert r.returncode in (0, 1), r.stderr
    (p,) = json.loads((tmp_path / "p" / "predictions.json").read_text())
    fit = p["fits"]["step1"]
    assert fit["law"] == "PurePowerOfCompute" and set(fit["params"]) == {"A", "alpha"}
    assert 0 < fit["params"]["alpha"] < 1 and p["pred_loss_low"] < p["pred_loss"] < p["pred_loss_high"]
    # the same choice is refused, with the known ones named, without the registry line
    monkeypatch.delitem(STEP1_LAWS, "pure_power")
    r = ladder_here("predict", *ladder, "--step1", "pure_power", *TARGET, *QUICK, "--out", tmp_path / "q")
    assert r.returncode == 2 and "invalid choice: 'pure_power'" in r.stderr


def test_a_new_task_is_one_declaration_file(ladder, tmp_path, ladder_here):
    spec = tmp_path / "tasks.yaml"  # the one new file: columns, chance level, metric kind
    spec.write_text(f"tasks:\n  story_completion:\n    accuracy: {ACC}\n    loss: {BPB}\n"
                    f"    choices: 4\n    metric: len_norm\n")
    r = ladder_here("predict", *ladder, "--task-spec", spec, "--tasks", "story_completion",
                    "--link-floor", "chance", *TARGET, *QUICK, "--out", tmp_path / "p")
    assert r.returncode in (0, 1), r.stderr
    (p,) = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert p["task"] == "story_completion" and p["loss_metric"] == BPB
    assert p["fits"]["step2"]["params"]["b"] == 0.25  # the declared chance level is step 2's floor
    true = LAW["E"] + LAW["A"] / 3e9 ** LAW["alpha"] + LAW["B"] / 6e10 ** LAW["beta"]
    assert p["pred_loss"] == pytest.approx(true, rel=0.05) and np.isfinite(p["pred_acc"])
