"""Print the build record make puts in the wheel: the commit, its state, the checkout's path.

Read back by ``bench/engine/machine.py`` (``provenance``), so every results.json names the code it
measured, even when the package was installed from another checkout.
"""

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git(*arguments: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


commit = git("rev-parse", "HEAD")
dirty = git("status", "--porcelain", "--untracked-files=no")
record = {"commit": commit or "unknown (not a git checkout)", "built_from": str(ROOT)}
if commit:
    record["dirty"] = bool(dirty)
print(json.dumps(record))
