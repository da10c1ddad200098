"""torch.compile under the trainer's strategies: one compiled graph serves every decoder layer
(no recompile per layer: under FSDP each layer is a frame of its own, and a KV cache made Dynamo
guard on the layer's index until its recompile limit left the rest eager), and nothing
recompiles after the first step, training or evaluating. Recompiles are Dynamo's own count
(ladder/train/recompiles.py); the probe runs the trainer's set-up in a fresh one-process gloo
group (tests/compile_probe.py) with Dynamo's eager backend: Dynamo's guards decide recompiles,
whichever backend then compiles the graphs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def probe(strategy: str, layers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "compile_probe.py"), strategy, str(layers)],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def check(res: dict, layers: int) -> None:
    assert not res["limit_hit"], res
    assert res["after_first_steps"] == 0, res  # evaluation, and training after it, reuse the graphs
    # a recompile per additional layer is the per-layer guard (the KV cache's layer index)
    assert res["recompiles"] < layers - 1, res


def test_fsdp_compiles_one_graph_for_all_layers():
    check(probe("fsdp", 3), 3)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_twelve_layers_no_recompile_limit(strategy):
    check(probe(strategy, 12), 12)
