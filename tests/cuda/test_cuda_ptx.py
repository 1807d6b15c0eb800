"""Every kernel compiles for sm_90 without a GPU, where libNVVM is installed (ptx_check.py)."""

import os
import subprocess
import sys
from pathlib import Path


def test_every_kernel_compiles_to_ptx():
    import pytest

    script = Path(__file__).with_name("ptx_check.py")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    if result.returncode == 2:
        pytest.skip(result.stdout.strip().removeprefix("SKIP: "))
    assert result.returncode == 0, result.stdout + result.stderr
