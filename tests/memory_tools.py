"""What the memory measurements share (tests/test_fsdp.py's MEASURE, tests/memory_probe.py)."""

import torch


def status(key: str) -> int:
    """Bytes of ``key`` (VmRSS:, VmHWM:) in this process's /proc status: the kernel's own accounting."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def restart_peak() -> None:
    """VmHWM restarts from the current resident size (what came before is not the step's)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def pay_first_use_costs() -> None:
    """The libraries' lazy first-use costs (transformers' model modules, ~150 MiB; kernels) are not
    a step's memory: pay them on a throwaway model first."""
    from ladder.recipe import from_dict
    from ladder.runplan import plan_run
    from ladder.train.setup import build_model

    recipe = from_dict({"model": {"sizes": ["tiny-9k"]}, "train": {"seq_len": 8, "batch_tokens": 8}})
    warm = build_model(plan_run(recipe, "tiny-9k", 1.0, 0, 1024))
    warm(input_ids=torch.zeros(1, 8, dtype=torch.long), loss_scale=1.0).backward()
