"""The driver behind ``make bench``: venvs, one worker process per library, then the report.

    python -m benchmarks.run [--quick] [--long] [--libs none,cacheops,...] [--report-only]

It expects the servers in ``FRESHCACHE_TEST_PG_*`` / ``FRESHCACHE_TEST_REDIS_URL`` (which
``benchmarks/bench.sh`` starts, or reuses when already set). Each library gets its own
PostgreSQL database and Redis database number and runs in its own process, from its own
virtualenv: ``.venv-bench`` (freshcache from this repo, and the no-cache baseline),
``.venv-bench-cacheops`` and ``.venv-bench-cachalot`` (the latest releases from PyPI; reinstalled
when their requirements change, when older than a week, or with ``--upgrade``).

Raw results go to ``benchmarks/.results/``; the report to ``docs/benchmarks.md`` and
``docs/img/bench-*.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from benchmarks.config import LIBRARIES, REPO_ROOT, STATE_REDIS_DB, Config, Library

RESULTS = REPO_ROOT / "benchmarks" / ".results"
STALE_AFTER = 7 * 24 * 3600  # seconds before the peers' venvs are checked for new releases


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


# -- virtualenvs --------------------------------------------------------------------------------


def runs(python: Path) -> bool:
    try:
        return subprocess.run([python, "-c", ""], capture_output=True).returncode == 0
    except OSError:
        return False


def ensure_venv(lib: Library, upgrade: bool) -> Path:
    """Create or update the library's venv; a stamp skips the work when it is current."""
    venv = REPO_ROOT / lib.venv
    python = venv / "bin" / "python"
    if not lib.requirements:  # .venv-bench, made by bench.sh
        return python
    base = os.environ.get("BENCH_BASE_PYTHON", sys.executable)
    django = os.environ.get("BENCH_DJANGO_SPEC", "Django>=5.2,<5.3")
    requirements = [django, *lib.requirements]
    stamp_file = venv / ".bench-stamp"
    stamp = hashlib.sha256("\n".join([base, *requirements]).encode()).hexdigest()
    fresh = (
        stamp_file.exists()
        and stamp_file.read_text().strip() == stamp
        and time.time() - stamp_file.stat().st_mtime < STALE_AFTER
        and runs(python)
    )
    if fresh and not upgrade:
        return python
    started = time.monotonic()
    log(f"installing {lib.venv}: {' '.join(requirements)}")
    if not runs(python):
        subprocess.run([base, "-m", "venv", "--clear", venv], check=True)
    stamp_file.unlink(missing_ok=True)
    pip = [python, "-m", "pip", "install", "--progress-bar", "off", "--upgrade", *requirements]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"pip install into {lib.venv} failed")
    stamp_file.write_text(stamp + "\n")
    log(f"{lib.venv} ready in {time.monotonic() - started:.0f}s")
    return python


# -- servers and the machine --------------------------------------------------------------------


def redis_url(base: str, db: int) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def server_env() -> dict[str, str]:
    try:
        return {
            "BENCH_PG_HOST": os.environ["FRESHCACHE_TEST_PG_HOST"],
            "BENCH_PG_PORT": os.environ["FRESHCACHE_TEST_PG_PORT"],
            "BENCH_PG_USER": os.environ.get("FRESHCACHE_TEST_PG_USER", "postgres"),
            "BENCH_PG_MAINT_DB": os.environ.get("FRESHCACHE_TEST_PG_NAME", "postgres"),
            "BENCH_STATE_REDIS_URL": redis_url(
                os.environ["FRESHCACHE_TEST_REDIS_URL"], STATE_REDIS_DB
            ),
        }
    except KeyError as exc:
        raise SystemExit(
            f"{exc.args[0]} is not set: run `make bench` (which starts the servers) "
            "or `make services-shell` first"
        ) from None


def machine() -> dict[str, Any]:
    def first(path: str, key: str) -> str | None:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return None

    mem_kb = first("/proc/meminfo", "MemTotal")
    mem = f"{int(mem_kb.split()[0]) / 2**20:.1f} GiB" if mem_kb else "?"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True, cwd=REPO_ROOT
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": first("/proc/cpuinfo", "model name") or platform.processor() or "?",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "commit": commit + (" (src/ modified)" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# -- running --------------------------------------------------------------------------------------


def run_library(lib: Library, python: Path, config_file: Path, env: dict[str, str]) -> Path:
    out = RESULTS / f"{lib.id}.json"
    out.unlink(missing_ok=True)
    lib_env = {
        **os.environ,
        **env,
        "BENCH_DB_NAME": "bench_" + lib.id.replace("-", "_"),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    if lib.redis_db is not None:
        lib_env["BENCH_REDIS_URL"] = redis_url(os.environ["FRESHCACHE_TEST_REDIS_URL"], lib.redis_db)
    command = [str(python), "-m", "benchmarks.worker", "--lib", lib.id]
    command += ["--config", str(config_file), "--out", str(out)]
    done = subprocess.run(command, cwd=REPO_ROOT, env=lib_env)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"the {lib.id} run failed (exit {done.returncode})")
    return out


def command_line(args: argparse.Namespace) -> str:
    knobs = []
    if args.quick:
        knobs.append("QUICK=1")
    if args.long:
        knobs.append("LONG=1")
    if args.libs:
        knobs.append(f"LIBS={args.libs}")
    return " ".join(["make bench", *knobs])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke run")
    parser.add_argument("--long", action="store_true", help="also the 10x memory run")
    parser.add_argument("--libs", default="", help="comma-separated subset of " + ", ".join(
        lib.id for lib in LIBRARIES))
    parser.add_argument("--upgrade", action="store_true", help="pip install --upgrade the peers")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from .results/run.json"
    )
    args = parser.parse_args(argv)

    from benchmarks import report

    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        report.write(json.loads((RESULTS / "run.json").read_text()))
        return 0

    wanted = [x for x in args.libs.split(",") if x]
    libs = [lib for lib in LIBRARIES if not wanted or lib.id in wanted]
    if wanted and len(libs) != len(wanted):
        raise SystemExit(f"unknown library in {wanted}; known: {[lib.id for lib in LIBRARIES]}")
    config = Config.make(quick=args.quick, long=args.long)
    started = time.monotonic()
    env = server_env()
    pythons = {lib.id: ensure_venv(lib, args.upgrade) for lib in libs}
    config_file = RESULTS / "config.json"
    config_file.write_text(config.to_json())

    results: dict[str, Any] = {}
    for n, lib in enumerate(libs, 1):
        log(f"{n}/{len(libs)} {lib.label} ({minutes(time.monotonic() - started)} so far)")
        out = run_library(lib, pythons[lib.id], config_file, env)
        results[lib.id] = json.loads(out.read_text())

    run = {
        "config": json.loads(config.to_json()),
        "machine": machine(),
        "command": command_line(args),
        "argv": shlex.join(sys.argv),
        "seconds": time.monotonic() - started,
        "libraries": [
            {"id": lib.id, "label": lib.label, "shared": lib.shared, "dist": lib.dist}
            for lib in libs
        ],
        "results": results,
    }
    (RESULTS / "run.json").write_text(json.dumps(run, indent=1))
    report.write(run)
    log(f"done in {minutes(run['seconds'])}: docs/benchmarks.md, docs/img/bench-*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
