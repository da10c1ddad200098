"""Experiment tracking (W&B through accelerate's tracker) and the hardware peak used for MFU."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from ladder.recipe import TrackingConfig

# Dense (not 2:4-sparse) bf16 peak FLOP/s of one device, from NVIDIA's data sheets, matched in
# order against torch.cuda.get_device_name (e.g. "NVIDIA H100 80GB HBM3" is the SXM part, "NVIDIA
# H100 PCIe", "NVIDIA H100 NVL"; "NVIDIA L40" is not an L40S nor an L4). A device no pattern
# matches has no MFU (LADDER_PEAK_FLOPS sets one).
GPU_PEAK_FLOPS: tuple[tuple[str, str, float], ...] = (
    (r"\bH100\b.*\bNVL\b", "H100 NVL", 835e12),
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe", 756e12),
    (r"\bH100\b", "H100 SXM", 989e12),
    (r"\bH200\b.*\bNVL\b", "H200 NVL", 835e12),
    (r"\bGH200\b", "GH200", 989e12),
    (r"\bH200\b", "H200 SXM", 989e12),
    (r"\bA100\b", "A100 (40 and 80 GB)", 312e12),
    (r"\bL40S\b", "L40S", 362e12),
    (r"\bL40\b", "L40", 181e12),
    (r"\bL4\b", "L4", 121e12),
)


def gpu_peak_flops(name: str) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, the part matched) of a CUDA device name; (None, name) if unknown."""
    import re

    for pattern, part, peak in GPU_PEAK_FLOPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return peak, f"{part} dense bf16"
    return None, f"unknown GPU {name!r}"


def wandb_settings(cfg: TrackingConfig, ladder_name: str, run_name: str, run_dir: str) -> tuple[str | None, dict]:
    """(log_with, init_kwargs) for ``Accelerator``/``init_trackers``. The W&B run id is derived
    from the run directory so a resumed run continues the same W&B run."""
    if not cfg.wandb or cfg.mode == "disabled":
        return None, {}
    os.environ.setdefault("WANDB_MODE", cfg.mode)
    import hashlib

    run_id = hashlib.sha1(os.path.abspath(run_dir).encode()).hexdigest()[:12]
    kw = {"group": cfg.group or ladder_name, "name": run_name, "dir": run_dir, "id": run_id,
          "resume": "allow"}
    if cfg.entity:
        kw["entity"] = cfg.entity
    return "wandb", {"wandb": kw}


def start_trackers(accelerator, project: str, config: dict, init_kwargs: dict, run_dir,
                   warn=None) -> str:
    """``accelerator.init_trackers``; returns the W&B mode the run logs in. W&B is a view of
    the run (its record is the run directory): when online W&B cannot start (no network, the
    server down), the run logs offline under the same run id, to `wandb sync` later, instead of
    crashing after the rung's setup. An explicit offline mode that fails is still an error."""
    try:
        accelerator.init_trackers(project, config=config, init_kwargs=init_kwargs)
        return os.environ.get("WANDB_MODE", "online")
    except Exception as e:  # noqa: BLE001 - wandb raises CommError, UsageError, timeouts ...
        if os.environ.get("WANDB_MODE", "online") != "online":
            raise
        first = " ".join(str(e).split())[:300]
        (warn or (lambda m: print(m, file=sys.stderr, flush=True)))(
            f"warning: W&B online failed ({type(e).__name__}: {first}); logging this run offline "
            f"under {run_dir}/wandb instead: `wandb sync` it later")
    release_wandb_service(warn=warn)  # the failed attempt keeps the run id in W&B's service
    accelerator.trackers.clear()  # and its tracker, which init_trackers would start again
    init_kwargs["wandb"]["mode"] = "offline"
    accelerator.init_trackers(project, config=config, init_kwargs=init_kwargs)
    return "offline"


WANDB_TEARDOWN_TIMEOUT_S = 60.0


def release_wandb_service(timeout: float = WANDB_TEARDOWN_TIMEOUT_S, warn=None) -> bool:
    """``wandb.teardown()``, waited for at most ``timeout`` seconds; True when it finished.

    Teardown joins W&B's service process, which may still be retrying the unreachable server
    (minutes by default), and exits the caller when that process ends with an error code: a
    rung holding its GPUs must neither wait for it nor die of it. It runs in a daemon thread;
    a service that does not stop in time is left to end on its own."""
    import threading

    import wandb

    say = warn or (lambda m: print(m, file=sys.stderr, flush=True))
    failed: list[BaseException] = []

    def teardown() -> None:
        try:
            wandb.teardown()
        except BaseException as e:  # noqa: BLE001 - SystemExit(service exit code) included
            failed.append(e)

    t = threading.Thread(target=teardown, name="wandb-teardown", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        say(f"warning: W&B's service did not stop within {timeout:g} s; continuing without it")
        return False
    if failed:
        say(f"warning: stopping W&B's service failed ({failed[0]!r}); continuing without it")
    return True


def peak_flops(device) -> tuple[float | None, str]:
    """(peak FLOP/s of one device, how it was obtained) for MFU. ``LADDER_PEAK_FLOPS`` overrides."""
    env = os.environ.get("LADDER_PEAK_FLOPS")
    if env:
        return float(env), "LADDER_PEAK_FLOPS"
    import torch

    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device))
    if device.type == "cpu":
        return measure_cpu_matmul_flops(), "measured fp32 matmul"
    return None, device.type


_CPU_PEAK: float | None = None


def measure_cpu_matmul_flops(n: int = 512, seconds: float = 0.2) -> float:
    """Best fp32 matmul FLOP/s of this CPU with torch's current thread count (cached)."""
    global _CPU_PEAK
    if _CPU_PEAK is None:
        import torch

        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best, t_end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            for _ in range(4):
                a @ b
            best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
        _CPU_PEAK = best
    return _CPU_PEAK


def jsonable_config(d: dict[str, Any]) -> dict[str, Any]:
    """Flatten nested config for W&B's config panel ('train.lr': ...)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        else:
            out[prefix] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)

    walk("", d)
    return out
