"""The training processes keep freed memory: a step's activations are reused, not faulted back in from the OS."""

import subprocess
import sys

import pytest

from pocus_edge import allocator

# Three training steps of a small CNN in a fresh process, after two warm-up steps; prints their minor page faults.
STEPS = """
import resource, sys, torch, torchvision
torch.set_num_threads(1)
from pocus_edge.allocator import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "keep" else "default", file=sys.stderr)
torch.manual_seed(0)
model = torchvision.models.resnet18().to(memory_format=torch.channels_last)
x = torch.randn(4, 3, 128, 128)
faults = 0
for step in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(x).square().mean().backward()
    if step >= 2:
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults)
"""


def _faults(mode: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip()), done.stderr


def test_freed_step_memory_is_reused_not_faulted_in_again():
    kept, said = _faults("keep")
    if not said.startswith("glibc"):
        pytest.skip(f"the allocator setting does not apply here ({said.strip()})")
    default, _ = _faults("default")
    if default < 5000:  # the control must fault, or this compares nothing
        pytest.skip(f"this allocator already keeps step memory ({default} faults in 3 steps without the setting)")
    assert kept < 0.02 * default, f"{kept} page faults with the setting, {default} without"


def test_user_malloc_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert allocator.keep_freed_memory().startswith("unchanged: MALLOC_")
