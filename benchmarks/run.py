"""The driver behind ``make bench``: one worker process per library, interleaved, then the report.

    python -m benchmarks.run [--quick] [--long] [--backend redis|cluster]
                             [--libs none,cacheops,...] [--report-only]

It expects the servers in ``FRESHCACHE_TEST_PG_*`` / ``FRESHCACHE_TEST_REDIS_URL`` (and
``FRESHCACHE_TEST_CLUSTER_URL`` with ``--backend cluster``), which ``benchmarks/bench.sh``
starts, or reuses when already set. Each library runs in its own process
(:mod:`benchmarks.worker`), from its own virtualenv (:mod:`benchmarks.venvs`), with its own
PostgreSQL database and Redis database number, or the whole Redis Cluster for a cluster
library. The workers live through the whole run and
take turns: every micro operation is timed in ``rounds`` batches, library after library, and
every mixed-workload cell runs for each library before the next cell starts, so drift and
whatever else the machine does weigh on all libraries alike.

Raw results go to ``benchmarks/.results/``; the report to ``docs/benchmarks.md`` and
``docs/img/bench-*.png`` (:mod:`benchmarks.report`). A ``--quick`` run keeps both under
``benchmarks/.results/quick/`` so that a smoke test never replaces the published figures.

``--backend cluster`` (``make bench BACKEND=cluster``) runs freshcache on the Redis Cluster
next to freshcache on one Redis and no cache (:data:`benchmarks.config.BACKENDS`), with a
shorter configuration; its raw results go to ``benchmarks/.results/cluster/`` (or
``.results/quick/cluster/``) and its report is one section of the same page, "freshcache on
Redis Cluster", which it replaces while keeping the rest of the page as it is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from benchmarks.config import (
    BACKENDS,
    HIT_OPS,
    LIBRARIES,
    REPO_ROOT,
    Config,
    Library,
)
from benchmarks.stats import combine_cost, combine_rounds, summarize

RESULTS = REPO_ROOT / "benchmarks" / ".results"
_started = time.monotonic()
#: 1-minute load averages sampled at each progress line, by phase.
_load: dict[str, list[float]] = {"micro": [], "mixed": []}
_phase = ["setup"]


def log(message: str) -> None:
    if _phase[0] in _load:
        _load[_phase[0]].append(os.getloadavg()[0])
    elapsed = time.monotonic() - _started
    print(
        f"[bench {int(elapsed // 60)}m{int(elapsed % 60):02d}s] {message}",
        file=sys.stderr,
        flush=True,
    )


# -- servers and the machine --------------------------------------------------------------------


def redis_url(base: str, db: int) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def server_env(cluster: bool = False) -> dict[str, str]:
    try:
        env = {
            "BENCH_PG_HOST": os.environ["FRESHCACHE_TEST_PG_HOST"],
            "BENCH_PG_PORT": os.environ["FRESHCACHE_TEST_PG_PORT"],
            "BENCH_PG_USER": os.environ.get("FRESHCACHE_TEST_PG_USER", "postgres"),
            "BENCH_PG_MAINT_DB": os.environ.get("FRESHCACHE_TEST_PG_NAME", "postgres"),
            # Asked for the server's version only (no cache has no Redis of its own).
            "BENCH_SERVER_REDIS_URL": os.environ["FRESHCACHE_TEST_REDIS_URL"],
        }
        if cluster and "FRESHCACHE_TEST_CLUSTER_URL" not in os.environ:
            raise KeyError("FRESHCACHE_TEST_CLUSTER_URL")  # read by the cluster settings
        return env
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

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT)
        return done.stdout.strip()

    mem_kb = first("/proc/meminfo", "MemTotal")
    dirty = git("status", "--porcelain", "--", "src")
    return {
        "nproc": os.cpu_count(),
        "cpu": first("/proc/cpuinfo", "model name") or platform.processor() or "?",
        "memory": f"{int(mem_kb.split()[0]) / 2**20:.1f} GiB" if mem_kb else "?",
        "os": f"{platform.system()} {platform.release()}",
        "commit": "commit "
        + git("rev-parse", "--short", "HEAD")
        + (" + uncommitted src/ changes" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# -- the workers ----------------------------------------------------------------------------------


class Worker:
    """One library's process and its line-per-command JSON channel."""

    def __init__(self, lib: Library, python: Path, config_file: Path, env: dict[str, str]) -> None:
        self.lib = lib
        lib_env = {
            **os.environ,
            **env,
            "BENCH_DB_NAME": "bench_" + lib.id.replace("-", "_"),
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        if lib.cluster:
            lib_env["BENCH_REDIS_URL"] = os.environ["FRESHCACHE_TEST_CLUSTER_URL"]
        elif lib.redis_db is not None:
            base = os.environ["FRESHCACHE_TEST_REDIS_URL"]
            lib_env["BENCH_REDIS_URL"] = redis_url(base, lib.redis_db)
        command = [str(python), "-m", "benchmarks.worker", "--lib", lib.id]
        self.proc = subprocess.Popen(
            [*command, "--config", str(config_file)],
            cwd=REPO_ROOT,
            env=lib_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, Any] = {}

    def _read(self) -> Any:
        stdout: IO[str] = self.proc.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if not line:
            raise SystemExit(f"the {self.lib.id} worker exited (code {self.proc.wait()})")
        message = json.loads(line)
        if "error" in message:
            raise SystemExit(f"the {self.lib.id} worker failed:\n{message['error']}")
        return message

    def ready(self) -> None:
        self.info = self._read()["ready"]

    def ask(self, **command: Any) -> Any:
        stdin: IO[str] = self.proc.stdin  # type: ignore[assignment]
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        return self._read()["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"cmd": "quit"}\n')  # type: ignore[union-attr]
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def turns(workers: list[Worker], round_: int) -> list[Worker]:
    """The workers in a rotated order, so no library always goes first."""
    k = round_ % len(workers)
    return workers[k:] + workers[:k]


def fmt_us(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def run_micro(workers: list[Worker], config: Config) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {w.lib.id: {"ops": {}, "floor": {}} for w in workers}
    steps = [(op, False) for op in config.micro_ops] + [
        (op, True) for op in HIT_OPS if any(w.lib.uses_redis for w in workers)
    ]
    for n, (op, floor) in enumerate(steps, 1):
        invalidate = op == "invalidate_model"
        rounds = config.invalidate_repeats if invalidate else config.rounds
        per_round = 1 if invalidate else math.ceil(config.iterations / rounds)
        samples: dict[str, list[int]] = {w.lib.id: [] for w in workers}
        keys: dict[str, int] = {}
        nodes: dict[str, float] = {}
        absent: set[str] = set()
        for r in range(rounds):
            for w in turns(workers, r):
                if w.lib.id in absent or (floor and not w.lib.uses_redis):
                    continue
                warmup = max(config.warmup, 100) if r == 0 else max(10, per_round // 10)
                cmd = "floor" if floor else "micro"
                got = w.ask(cmd=cmd, op=op, iterations=per_round, warmup=warmup)
                if got is None or (not floor and got["samples"] is None):
                    absent.add(w.lib.id)
                    continue
                samples[w.lib.id].extend(got["samples"])
                if floor:
                    keys[w.lib.id] = got["keys"]
                    if "nodes" in got:
                        nodes[w.lib.id] = got["nodes"]
        figures = []
        for w in workers:
            lib = w.lib.id
            if floor:
                if samples[lib]:
                    out[lib]["floor"][op] = {"summary": summarize(samples[lib]), "keys": keys[lib]}
                    if lib in nodes:
                        out[lib]["floor"][op]["nodes"] = nodes[lib]
                continue
            entry: dict[str, Any] = {"summary": summarize(samples[lib]) if samples[lib] else None}
            entry.update(w.ask(cmd="check", op=op))
            out[lib]["ops"][op] = entry
            if entry["summary"]:
                figures.append(f"{lib} {fmt_us(entry['summary']['median_us'])}")
        if floor:
            figures = [
                f"{w.lib.id} {fmt_us(out[w.lib.id]['floor'][op]['summary']['median_us'])}"
                for w in workers
                if op in out[w.lib.id]["floor"]
            ]
        label = f"floor of {op}" if floor else op
        log(f"micro {n}/{len(steps)} {label} (median us): " + ", ".join(figures))
    return out


def run_cost(workers: list[Worker], config: Config) -> dict[str, list[dict[str, Any]]]:
    """CPU per operation at each write ratio; a figure is the median of its rounds."""
    out: dict[str, list[dict[str, Any]]] = {w.lib.id: [] for w in workers}
    if not config.cost_rounds:
        return out
    for k, ratio in enumerate(config.mixed.write_ratios, 1):
        rounds: dict[str, list[dict[str, Any]]] = {}
        for r in range(config.cost_rounds):
            for w in turns(workers, (k - 1) * config.cost_rounds + r + 1):
                got = w.ask(
                    cmd="cost", write_ratio=ratio, ops=config.cost_ops, warmup=config.cost_warmup
                )
                rounds.setdefault(w.lib.id, []).append(got)
        for lib_id, done in rounds.items():
            cell = combine_cost(done)
            out[lib_id].append(cell)
            total = sum(cell[k] or 0 for k in ("client_us", "postgres_us", "redis_us"))
            log(f"CPU per operation, writes={ratio:.0%} {lib_id}: {total:.0f} us")
    return out


def run_mixed(workers: list[Worker], config: Config) -> dict[str, dict[str, Any]]:
    mixed = config.mixed
    out: dict[str, dict[str, Any]] = {w.lib.id: {"cells": [], "long": None} for w in workers}
    cells = [(n, ratio) for n in mixed.workers for ratio in mixed.write_ratios]
    for k, (n, ratio) in enumerate(cells, 1):
        rounds: dict[str, list[dict[str, Any]]] = {}
        for r in range(mixed.rounds):
            for w in turns(workers, (k - 1) * mixed.rounds + r + 1):
                if n > 1 and not w.lib.shared:
                    continue
                cell = w.ask(cmd="mixed", workers=n, write_ratio=ratio, duration=mixed.duration)
                rounds.setdefault(w.lib.id, []).append(cell)
                per_node = ""
                if w.lib.cluster and cell["memory"]:
                    keys = "/".join(str(node["keys"]) for node in cell["memory"]["nodes"])
                    per_node = f", keys per primary {keys}"
                of = f" round {r + 1}/{mixed.rounds}" if mixed.rounds > 1 else ""
                log(
                    f"mixed {k}/{len(cells)}{of} workers={n} writes={ratio:.0%} {w.lib.id}: "
                    f"{cell['throughput']:.0f} ops/s, read p50 {cell['read']['median_us']:.0f} us,"
                    f" hits {cell['hit_ratio'] or 0:.0%}, stale {cell['stale']}/{cell['checked']}"
                    + per_node
                )
        for lib_id, done in rounds.items():
            out[lib_id]["cells"].append(combine_rounds(done))
    if mixed.long:
        n, ratio = mixed.memory_cell
        duration = mixed.duration * mixed.long_factor
        for w in workers:
            if not w.lib.uses_redis:
                continue
            log(f"mixed, {mixed.long_factor}x longer: {w.lib.id}, {duration:.0f}s ...")
            cell = w.ask(cmd="mixed", workers=n, write_ratio=ratio, duration=duration)
            out[w.lib.id]["long"] = cell
            memory = cell["memory"]
            log(
                f"mixed, {mixed.long_factor}x longer: {w.lib.id}: {memory['keys']} keys, "
                f"{memory['delta'] / 2**20:.1f} MiB, stale {cell['stale']}/{cell['checked']}"
            )
    return out


def command_line(args: argparse.Namespace) -> str:
    knobs = [f"{name}=1" for name, on in (("QUICK", args.quick), ("LONG", args.long)) if on]
    if args.backend != "redis":
        knobs.insert(0, f"BACKEND={args.backend}")
    if args.libs:
        knobs.append(f"LIBS={args.libs}")
    return " ".join(["make bench", *knobs])


def main(argv: list[str] | None = None) -> int:
    ids = ", ".join(lib.id for lib in LIBRARIES)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke run")
    parser.add_argument("--long", action="store_true", help="also the 10x longer memory run")
    parser.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default="redis",
        help="redis: the libraries on one Redis server (the default); cluster: freshcache on "
        f"the Redis Cluster, with {', '.join(BACKENDS['cluster'])} by default",
    )
    parser.add_argument("--libs", default="", help=f"comma-separated subset of: {ids}")
    parser.add_argument("--upgrade", action="store_true", help="pip install --upgrade the peers")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from .results/run.json (.results/quick/ with --quick, "
        "cluster/ under either with --backend cluster)",
    )
    args = parser.parse_args(argv)

    from benchmarks import report
    from benchmarks.venvs import ensure_venv

    # A quick run keeps its raw results and its report apart from the full run's, and the
    # cluster run its own apart from the single-Redis run's.
    cluster = args.backend == "cluster"
    results = RESULTS / "quick" if args.quick else RESULTS
    if cluster:
        results = results / "cluster"
    results.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        page = report.write(json.loads((results / "run.json").read_text()))
        log(f"wrote {page.relative_to(REPO_ROOT)}")
        return 0

    wanted = [x for x in args.libs.split(",") if x] or list(BACKENDS[args.backend])
    libs = [lib for lib in LIBRARIES if lib.id in wanted]
    if len(libs) != len(wanted):
        raise SystemExit(f"unknown library in {wanted}; known: {ids}")
    if not cluster and any(lib.cluster for lib in libs):
        raise SystemExit("a Redis Cluster library runs only with BACKEND=cluster (--backend)")
    if cluster and not any(lib.cluster for lib in libs):
        raise SystemExit("BACKEND=cluster needs a cluster library (freshcache-cluster) in LIBS")
    config = Config.make(quick=args.quick, long=args.long, backend=args.backend)
    env = server_env(cluster)
    load_before = os.getloadavg()
    about = machine()  # before the run: the commit measured is the one the workers import
    pythons = {lib.id: ensure_venv(lib, args.upgrade) for lib in libs}
    config_file = results / "config.json"
    config_file.write_text(config.to_json())

    log(f"starting {len(libs)} workers: {', '.join(lib.id for lib in libs)}")
    workers = [Worker(lib, pythons[lib.id], config_file, env) for lib in libs]
    try:
        for w in workers:
            w.ready()
        log(
            "databases ready; micro benchmarks, interleaved in "
            f"{config.rounds} rounds of {math.ceil(config.iterations / config.rounds)} runs"
        )
        _phase[0] = "micro"
        micro = run_micro(workers, config)
        log(f"CPU per operation of the mixed workload's operations, {config.cost_ops} each")
        cost = run_cost(workers, config)
        _phase[0] = "mixed"
        log(
            f"mixed workload: {len(config.mixed.workers) * len(config.mixed.write_ratios)} cells "
            f"of {config.mixed.duration:g}s per library"
        )
        mixed = run_mixed(workers, config)
    finally:
        for w in workers:
            w.close()

    by_library = {
        w.lib.id: {
            "versions": w.info["versions"],
            "micro": {**micro[w.lib.id], "key_api": w.info["key_api"]},
            "mixed": mixed[w.lib.id],
            "cost": cost[w.lib.id],
        }
        for w in workers
    }
    run = {
        "config": json.loads(config.to_json()),
        "machine": about,
        "command": command_line(args),
        "seconds": time.monotonic() - _started,
        "load": {
            "before": load_before[0],
            **{
                phase: {"mean": sum(v) / len(v), "max": max(v)} if v else None
                for phase, v in _load.items()
            },
        },
        "backend": args.backend,
        "libraries": [
            {
                "id": lib.id,
                "label": lib.label,
                "shared": lib.shared,
                "dist": lib.dist,
                "redis": lib.redis_label,
            }
            for lib in libs
        ],
        "results": by_library,
    }
    (results / "run.json").write_text(json.dumps(run, indent=1))
    page = report.write(run)
    log(f"done: {page.relative_to(REPO_ROOT)}, plots in {page.parent.relative_to(REPO_ROOT)}/img/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
