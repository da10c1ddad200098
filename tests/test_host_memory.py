"""On CPU the trainer keeps freed host memory in the process, so a step's large buffers do not
page-fault in again on every step (ladder/train/host_memory.py)."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = r"""
import resource, torch
from transformers import Olmo2Config, Olmo2ForCausalLM
from ladder.train.host_memory import keep_freed_memory
applied = keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
model = Olmo2ForCausalLM(Olmo2Config(vocab_size=4096, hidden_size=48, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=3))
ids = torch.randint(0, 4096, (16, 128))  # 32 MiB of logits: over glibc's largest mmap threshold
def step():
    model(input_ids=ids, labels=ids).loss.backward()
    model.zero_grad(set_to_none=True)
for _ in range(5):  # warm up
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(keep: str) -> tuple[str, int]:
    env = {**os.environ, "LADDER_KEEP_HOST_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.slow  # a performance property (about 30 s); bench_train.py prints the figures too
@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"),
                    reason="mallopt is glibc's (Linux); elsewhere keep_freed_memory does nothing")
def test_freed_buffers_are_reused_without_page_faults():
    off_applied, off = _faults("0")
    on_applied, on = _faults("1")
    assert (off_applied, on_applied) == ("False", "True")
    assert off > 10 * 8192  # glibc's default: at least the 32 MiB of logits fresh on each step
    assert on < off / 10  # what is left is mostly Python's own arenas
