"""scripts/setup.sh is idempotent: a second run says torch is already installed instead of installing it again."""

import subprocess
import sys
from pathlib import Path

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def _pinned_installed(*specs: str) -> int:
    """Exit status of setup.sh's own ``pinned_installed`` check, run with this interpreter's pip."""
    script = f'eval "$(sed -n "/^pinned_installed()/,/^}}/p" "{SETUP}")"; pinned_installed "$@"'
    return subprocess.run(["bash", "-c", script, "check", sys.executable, *specs]).returncode


def test_setup_checks_the_pinned_torch_before_installing_it():
    from importlib.metadata import version

    torch = version("torch").split("+")[0]
    assert _pinned_installed(f"torch=={torch}") == 0
    assert _pinned_installed(f"torch=={torch}", "torch==0.0.1") == 1  # every spec must hold
    assert _pinned_installed(f"torch=={torch}0") == 1 and _pinned_installed("no-such-package==1.0") == 1
    text = SETUP.read_text()
    assert 'if pinned_installed .venv/bin/python "torch==2.14.1" "torchvision==0.29.1"' in text
    assert "already installed" in text
