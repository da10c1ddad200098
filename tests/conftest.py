import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LADDER_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# calibrations made by tests go to a cache of this test session, not the user's
os.environ.setdefault("LADDER_CALIBRATION_CACHE", tempfile.mkdtemp(prefix="ladder-calibrations-"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set LADDER_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def olmo_ladder_dir(shared_data) -> Path:
    d = shared_data / "olmo-ladder"
    if not d.is_dir():
        pytest.skip(f"OLMo-ladder data not found at {d}")
    return d


@pytest.fixture
def ladder_here(capsys, monkeypatch):
    """``ladder ARGS`` in this process, for commands that only read and print (plan, sizes):
    the same parser and code as ``python -m ladder`` without a fresh interpreter importing
    torch and transformers again (about 7 s a call). Returns (exit code, stdout, stderr)."""
    from types import SimpleNamespace

    from ladder.cli import main

    def run(*args, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=rc, stdout=out, stderr=err)

    return run


# The real single-node SLURM cluster (session-scoped: one per test run; SLURM's ports are fixed).
from tests.slurm_cluster import slurm_cluster  # noqa: E402,F401
