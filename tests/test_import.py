"""`import scoresde` has no side effects: no optional import, no seeding, no device initialisation."""

import subprocess
import sys

OPTIONAL = ["sklearn", "matplotlib", "torch_fidelity", "torchmetrics", "safetensors", "tomli", "torchvision"]

SCRIPT = f"""
import sys, torch
state = torch.random.get_rng_state().clone()
import scoresde
assert torch.equal(state, torch.random.get_rng_state()), "import changed the global RNG state"
assert not torch.cuda.is_initialized(), "import initialised CUDA"
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r})
assert not loaded, f"import loaded optional packages: {{loaded}}"
missing = [n for n in scoresde.__all__ if not hasattr(scoresde, n)]
assert not missing, missing
print("ok")
"""


def test_import_has_no_side_effects():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
