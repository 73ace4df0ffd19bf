"""The peers' virtualenvs: the latest release of each from PyPI, next to the same Django.

``.venv-bench`` (freshcache from this repo, and the no-cache baseline) is made by
``benchmarks/bench.sh`` before the driver starts, since the driver runs in it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.config import REPO_ROOT, Library

__all__ = ["ensure_venv"]

#: Seconds after which a peer's venv is upgraded even though its requirements did not change,
#: so that "the latest release" stays true without asking PyPI on every run.
STALE_AFTER = 7 * 24 * 3600


def runs(python: Path) -> bool:
    try:
        return subprocess.run([python, "-c", ""], capture_output=True).returncode == 0
    except OSError:
        return False


def ensure_venv(lib: Library, upgrade: bool) -> Path:
    """Create or update the library's venv and return its interpreter; a stamp file skips the
    work when the requirements are unchanged and the install is less than a week old."""
    venv = REPO_ROOT / lib.venv
    python = venv / "bin" / "python"
    if not lib.requirements:
        return python
    base = os.environ.get("BENCH_BASE_PYTHON", sys.executable)
    django = os.environ.get("BENCH_DJANGO_SPEC", "Django>=5.2,<5.3")
    requirements = [django, *lib.requirements]
    stamp_file = venv / ".bench-stamp"
    stamp = hashlib.sha256("\n".join([base, *requirements]).encode()).hexdigest()
    current = (
        stamp_file.exists()
        and stamp_file.read_text().strip() == stamp
        and time.time() - stamp_file.stat().st_mtime < STALE_AFTER
        and runs(python)
    )
    if current and not upgrade:
        return python
    started = time.monotonic()
    print(f"[bench] installing {lib.venv}: {' '.join(requirements)}", file=sys.stderr)
    if not runs(python):
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    stamp_file.unlink(missing_ok=True)
    pip = [str(python), "-m", "pip", "install", "--progress-bar", "off", "--upgrade", *requirements]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"pip install into {lib.venv} failed")
    stamp_file.write_text(stamp + "\n")
    print(f"[bench] {lib.venv} ready in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return python
