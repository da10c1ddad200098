"""How one rung is spread over its processes, per size: DDP or FSDP2, micro-batch, activation
checkpointing, and the process-group timeout; and the accelerate set-up that does it.

The recipe's ``parallel:`` section is operational (like ``slurm:``): it changes memory and speed,
not what is computed, so a rung that ran out of memory can be given a smaller micro-batch or
activation checkpointing and resumed from its checkpoint without the sweep refusing the edit.

    parallel:
      strategy: ddp                  # ddp | fsdp (FSDP2 via accelerate, one unit per decoder layer)
      process_group_timeout_minutes: 30
      sizes:
        1B: {strategy: fsdp, micro_batch_size: 2, activation_checkpointing: true}
"""

from __future__ import annotations

import os

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

STRATEGIES = ("ddp", "fsdp")
_SIZE_KEYS = {"strategy": str, "micro_batch_size": int, "activation_checkpointing": bool,
              "reshard_after_forward": bool}
DEFAULT_TIMEOUT_MINUTES = 30.0  # rank 0 tokenizing a corpus or saving a 13B checkpoint
DECODER_LAYER = "Olmo2DecoderLayer"  # one FSDP unit per layer


class ParallelError(ValueError):
    """A bad ``parallel:`` section; the message names the file and the dotted key."""


@dataclass(frozen=True)
class SizeParallel:
    """What one size's rungs use. ``micro_batch_size`` None = the recipe's train.micro_batch_size."""

    strategy: str = "ddp"
    micro_batch_size: int | None = None
    activation_checkpointing: bool = False
    reshard_after_forward: bool = True


@dataclass
class ParallelConfig:
    default: SizeParallel = field(default_factory=SizeParallel)
    sizes: dict[str, SizeParallel] = field(default_factory=dict)
    timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES

    def for_size(self, size: str) -> SizeParallel:
        return self.sizes.get(size, self.default)


def _size_settings(d: Any, base: SizeParallel, where: str) -> SizeParallel:
    if not isinstance(d, dict):
        raise ParallelError(f"{where}: expected a mapping, got {d!r}")
    out = {}
    for key, value in d.items():
        typ = _SIZE_KEYS.get(key)
        if typ is None:
            raise ParallelError(f"{where}.{key}: unknown key (expected one of "
                                f"{', '.join(_SIZE_KEYS)})")
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ParallelError(f"{where}.{key}: expected {typ.__name__}, got {value!r}")
        if key == "strategy" and value not in STRATEGIES:
            raise ParallelError(f"{where}.strategy: expected one of {', '.join(STRATEGIES)}, "
                                f"got {value!r}")
        if key == "micro_batch_size" and value < 1:
            raise ParallelError(f"{where}.micro_batch_size: must be >= 1, got {value}")
        out[key] = value
    return replace(base, **out)


def parallel_config(recipe) -> ParallelConfig:
    """The recipe's ``parallel:`` section, validated; every error names file and key."""
    where = f"{recipe.source}: parallel"
    d = dict(getattr(recipe, "parallel", None) or {})
    sizes = d.pop("sizes", None) or {}
    timeout = d.pop("process_group_timeout_minutes", DEFAULT_TIMEOUT_MINUTES)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ParallelError(f"{where}.process_group_timeout_minutes: expected a number > 0, "
                            f"got {timeout!r}")
    default = _size_settings(d, SizeParallel(), where)
    if not isinstance(sizes, dict):
        raise ParallelError(f"{where}.sizes: expected a mapping size -> settings")
    known = set(recipe.model.sizes) | {t.size for t in recipe.targets if t.size}
    per_size = {}
    for size, over in sizes.items():
        if str(size) not in known:
            raise ParallelError(f"{where}.sizes.{size}: not a size of this recipe "
                                f"({', '.join(sorted(known))})")
        per_size[str(size)] = _size_settings(over, default, f"{where}.sizes.{size}")
    return ParallelConfig(default, per_size, float(timeout))


def micro_batch_size(recipe, size: str) -> int:
    s = parallel_config(recipe).for_size(size)
    return s.micro_batch_size or recipe.train.micro_batch_size


# ---------------------------------------------------------------------------- accelerate


def build_accelerator(settings: SizeParallel, *, cpu_only: bool, mixed_precision: str,
                      timeout_minutes: float, log_with=None):
    """An Accelerator running ``settings.strategy``. FSDP is accelerate's FSDP2 (fully_shard per
    decoder layer, bf16 params in compute with fp32 gradient reduction under bf16).

    accelerate enables FSDP only for GPU-like process groups; on CPU (gloo) it would silently run
    plain data parallel. FSDP2 itself works over gloo, so there the FSDP state is set before
    ``prepare``, and CPU tests run the same code path as a GPU cluster."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, InitProcessGroupKwargs

    plugin = None
    if settings.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy

        policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                  if mixed_precision == "bf16" else None)
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=[DECODER_LAYER],
            reshard_after_forward=settings.reshard_after_forward,
            state_dict_type="SHARDED_STATE_DICT", cpu_ram_efficient_loading=False,
            mixed_precision_policy=policy)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from accelerate.state import AcceleratorState

        # A second train() in one process (a notebook, a test) may use another precision or
        # strategy; accelerate would keep the first one's for the whole process.
        AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(
        cpu=cpu_only, mixed_precision=mixed_precision, step_scheduler_with_optimizer=False,
        log_with=log_with, fsdp_plugin=plugin,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(minutes=timeout_minutes))])
    if plugin is not None and accelerator.distributed_type == DistributedType.MULTI_CPU:
        from accelerate.state import PartialState

        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate syncs it
    return accelerator


def is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def enable_tf32() -> None:
    """TF32 matmuls/convolutions where the GPU has them (Ampere and later); fp32 elsewhere."""
    import torch

    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass (non-reentrant, so it
    composes with FSDP2 and torch.compile)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
