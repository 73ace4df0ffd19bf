"""Turn a run's results into ``docs/benchmarks.md`` and two plots in ``docs/img/``.

A cluster run (``make bench BACKEND=cluster``) renders one section, "freshcache on Redis
Cluster", between two HTML comments at the end of the same page: it replaces that section only,
and a single-Redis run keeps it when it rewrites the rest of the page.

Runs in the driver's venv: standard library and matplotlib only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.config import PREPARE_THRESHOLD, REPO_ROOT

__all__ = ["cluster_markdown", "markdown", "write"]

DOC = REPO_ROOT / "docs" / "benchmarks.md"
QUICK_DOC = REPO_ROOT / "benchmarks" / ".results" / "quick" / "benchmarks.md"
LATENCY_PNG = "bench-latency.png"
THROUGHPUT_PNG = "bench-throughput.png"
CLUSTER_THROUGHPUT_PNG = "bench-cluster-throughput.png"
#: The cluster section's bounds in the page; matched by their start only.
CLUSTER_BEGIN = "<!-- cluster section begin:"
CLUSTER_END = "<!-- cluster section end -->"

HIT_OPS = [
    ("get_pk", "get(pk=)"),
    ("get_slug", "get(slug=)"),
    ("fetch_1", "fetch 1 row"),
    ("fetch_20", "fetch 20 rows"),
    ("fetch_200", "fetch 200 rows"),
    ("count", "count()"),
    ("exists", "exists()"),
    ("aggregate", "aggregate()"),
    ("select_related", "select_related, 20 rows"),
]
OTHER_OPS = [
    ("miss_get_pk", "get(pk=) miss, cold"),
    ("miss_fetch_20", "fetch 20 rows miss, cold"),
    ("miss_after_write", "get(pk=) miss after a write"),
    ("save", "save() with invalidation"),
    ("save_inlined", "save(), no prepared statements"),
    ("invalidate_model", "invalidate_model"),
    ("cache_key", "cache key alone"),
]
FC = "freshcache"
FC_LOCAL = "freshcache-locmem"
FC_CLUSTER = "freshcache-cluster"
PEERS = ("none", "cacheops", "cachalot")
TIMES = "\u00d7"  # the multiplication sign, for ratios
DASH = "\u2013"  # an en dash, for empty cells

#: Issue #7's latency target that this suite can check directly.
TARGET_GET_RATIO = 0.6


# -- formatting -----------------------------------------------------------------------------------


def us(value: float | None) -> str:
    if value is None or math.isnan(value):
        return DASH
    if value >= 10_000:
        return f"{value / 1000:.1f} ms"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return "n/a"
    r = a / b
    return f"{r:.2f}{TIMES}" if r < 10 else f"{r:.0f}{TIMES}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def mib(n: int | None) -> str:
    return DASH if n is None else f"{n / 2**20:.1f} MiB"


# -- access ---------------------------------------------------------------------------------------


class Run:
    def __init__(self, run: dict[str, Any]) -> None:
        self.raw = run
        self.libs: list[dict[str, Any]] = run["libraries"]
        self.ids = [lib["id"] for lib in self.libs]
        self.labels = {lib["id"]: lib["label"] for lib in self.libs}
        self.results: dict[str, Any] = run["results"]

    def op(self, lib: str, name: str) -> dict[str, Any] | None:
        micro = self.results.get(lib, {}).get("micro") or {}
        return micro.get("ops", {}).get(name)

    def median(self, lib: str, name: str) -> float | None:
        entry = self.op(lib, name)
        return entry["summary"]["median_us"] if entry and entry.get("summary") else None

    def floor(self, lib: str, name: str) -> dict[str, Any] | None:
        micro = self.results.get(lib, {}).get("micro") or {}
        return micro.get("floor", {}).get(name)

    def floor_median(self, lib: str, name: str) -> float | None:
        entry = self.floor(lib, name)
        return entry["summary"]["median_us"] if entry else None

    def cells(self, lib: str) -> list[dict[str, Any]]:
        mixed = self.results.get(lib, {}).get("mixed") or {}
        return mixed.get("cells", [])

    def cell(self, lib: str, workers: int, write_ratio: float) -> dict[str, Any] | None:
        for cell in self.cells(lib):
            if cell["workers"] == workers and abs(cell["write_ratio"] - write_ratio) < 1e-9:
                return cell
        return None

    def version(self, lib: str, key: str) -> str:
        return str(self.results.get(lib, {}).get("versions", {}).get(key) or "?")

    def uses_redis(self, lib: str) -> bool:
        """Whether the library caches in Redis: a database number, or the cluster, which has
        none (runs recorded before the ``redis`` field: by id)."""
        entry = next(x for x in self.libs if x["id"] == lib)
        if "redis" in entry:
            return entry["redis"] is not None
        return lib not in ("none", FC_LOCAL)

    def micro_ops(self, ops: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """``ops`` less those this run did not time (runs before ``micro_ops``: all of them)."""
        timed = self.raw["config"].get("micro_ops")
        return [(name, label) for name, label in ops if timed is None or name in timed]


def cell_text(entry: dict[str, Any] | None, cached: bool = True) -> str:
    if not entry or not entry.get("summary"):
        return "n/a"
    s = entry["summary"]
    text = f"{us(s['median_us'])} / {us(s['p99_us'])}"
    if cached and entry.get("queries_on_hit"):
        text += " †"
    if entry.get("queries_after") == 0:
        text += " (a read right after it was still a hit!)"
    return text


# -- sections -------------------------------------------------------------------------------------


def section_machine(r: Run) -> str:
    m = r.raw["machine"]
    any_lib = r.ids[0]
    versions = [
        ("machine", f"{m['nproc']} cores, {m['cpu']}, {m['memory']} RAM, {m['os']}"),
        ("Python", r.version(any_lib, "python")),
        ("Django", r.version(any_lib, "django")),
        ("PostgreSQL", r.version(any_lib, "postgresql")),
        ("Redis", r.version(any_lib, "redis_server")),
        (
            "redis-py / hiredis / psycopg",
            " / ".join(r.version(any_lib, k) for k in ("redis_py", "hiredis", "psycopg")),
        ),
    ]
    for lib in r.ids:
        dist = next(x["dist"] for x in r.libs if x["id"] == lib)
        if dist and lib != FC_LOCAL:
            commit = f" ({m['commit']})" if lib == FC else ""
            versions.append((dist, r.version(lib, "library") + commit))
    versions += [
        (
            "database options",
            f"`prepare_threshold: {PREPARE_THRESHOLD}` for every library (psycopg may prepare "
            "a statement run "
            "that often; Django's own cursor prepares nothing, freshcache prepares its writes "
            "and fills; *save(), no prepared statements* is Django's default)",
        ),
        ("command", f"`{r.raw['command']}`"),
        ("date, duration", f"{m['date']}, {r.raw['seconds'] / 60:.1f} minutes"),
    ]
    return table(["", ""], [[k, v] for k, v in versions])


def load_note(r: Run) -> str:
    load = r.raw.get("load") or {}
    micro = load.get("micro")
    if not micro:
        return ""
    cores = r.raw["machine"]["nproc"]
    text = (
        f"Load average (1 minute) while the micro benchmarks ran: mean {micro['mean']:.1f}, "
        f"max {micro['max']:.1f}, on {cores} cores; the suite itself accounts for about 1 there "
        "(one library at a time, plus the servers)."
    )
    if micro["mean"] > 1.5:
        text += (
            " **Other processes were competing for the CPU during this run**: absolute "
            "figures are inflated and noisier than on an idle machine. Ratios stay comparable "
            "because the libraries took turns in short rounds, so the load weighed on all of "
            "them alike."
        )
    return text


def section_hits(r: Run) -> str:
    header = ["operation", *(r.labels[i] for i in r.ids)]
    has_floor = FC in r.ids
    if has_floor:
        header.append("floor: MGET + msgpack")
    rows = []
    for name, label in HIT_OPS:
        row = [label, *(cell_text(r.op(i, name), i != "none") for i in r.ids)]
        if has_floor:
            row.append(cell_text(r.floor(FC, name)))
        rows.append(row)
    return table(header, rows)


def section_ratios(r: Run) -> str:
    columns: list[tuple[str, str, str]] = []  # (header, numerator lib, denominator lib or floor)
    for ours in (FC, FC_LOCAL):
        if ours not in r.ids:
            continue
        for peer in (*PEERS, "floor"):
            if peer == "floor" and ours != FC:
                continue
            if peer != "floor" and peer not in r.ids:
                continue
            name = "floor" if peer == "floor" else r.labels[peer]
            columns.append((f"{r.labels[ours]} ÷ {name}", ours, peer))
    rows = []
    for name, label in [*HIT_OPS, *OTHER_OPS]:
        row = [label]
        for _, ours, peer in columns:
            theirs = r.floor_median(FC, name) if peer == "floor" else r.median(peer, name)
            row.append(ratio(r.median(ours, name), theirs))
        rows.append(row)
    return table(["operation (medians)", *(c[0] for c in columns)], rows)


def section_other(r: Run) -> str:
    header = ["operation", *(r.labels[i] for i in r.ids)]
    rows = []
    for name, label in r.micro_ops(OTHER_OPS):
        if name == "invalidate_model":
            keys = next((e["keys"] for i in r.ids if (e := r.op(i, name)) and e.get("keys")), None)
            label = f"invalidate_model, {keys:,} keys cached" if keys else label
        rows.append([label, *(cell_text(r.op(i, name)) for i in r.ids)])
    miss = ["get(pk=) cold miss ÷ no cache"]
    for i in r.ids:
        miss.append(
            DASH
            if i == "none"
            else ratio(r.median(i, "miss_get_pk"), r.median("none", "miss_get_pk"))
        )
    rows.append(miss)
    return table(header, rows)


def section_floors(r: Run) -> str:
    libs = [i for i in ("cacheops", "cachalot", FC) if i in r.ids]
    header = ["operation"]
    for i in libs:
        header += [f"{r.labels[i]} hit", "its floor (keys)", "hit ÷ floor"]
    rows = []
    for name, label in HIT_OPS:
        row = [label]
        for i in libs:
            f = r.floor(i, name)
            keys = f" ({f['keys']})" if f else ""
            row += [
                us(r.median(i, name)),
                us(r.floor_median(i, name)) + keys,
                ratio(r.median(i, name), r.floor_median(i, name)),
            ]
        rows.append(row)
    return table(header, rows)


def _mixed_rows(r: Run) -> list[tuple[int, float]]:
    config = r.raw["config"]["mixed"]
    return [(n, w) for w in config["write_ratios"] for n in config["workers"]]


def section_throughput(r: Run) -> str:
    header = ["writes", "workers", *(r.labels[i] for i in r.ids)]
    rows = []
    for n, w in _mixed_rows(r):
        row = [f"{w:.0%}", str(n)]
        for i in r.ids:
            cell = r.cell(i, n, w)
            row.append(_throughput(cell) if cell else DASH)
        rows.append(row)
    return table(header, rows)


def _throughput(cell: dict[str, Any]) -> str:
    """The cell's throughput, with its rounds' range when it ran several."""
    text = f"{cell['throughput']:,.0f}"
    rounds = cell.get("round_throughputs") or []
    if len(rounds) > 1:
        text += f" ({min(rounds):,.0f}{DASH}{max(rounds):,.0f})"
    return text


def _plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def _rounds_text(mixed: dict[str, Any]) -> str:
    rounds = mixed.get("rounds", 1)
    if rounds == 1:
        return "each cell runs once, the libraries taking turns cell by cell."
    return (
        f"each cell runs {rounds} rounds, the libraries taking turns round by round, and a "
        "figure is the median of its rounds (counts are summed; the range of the rounds' "
        "throughputs is in parentheses)."
    )


def _last(cell: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cell's last round (memory is a state, so it is read from one round)."""
    return cell.get("last_round", cell) if cell else None


def section_latency(r: Run) -> str:
    header = ["writes", "workers", *(r.labels[i] for i in r.ids)]
    rows = []
    for n, w in _mixed_rows(r):
        row = [f"{w:.0%}", str(n)]
        for i in r.ids:
            cell = r.cell(i, n, w)
            if not cell:
                row.append(DASH)
                continue
            hits = "" if i == "none" else f" · {cell['hit_ratio']:.0%} hits"
            row.append(
                f"{us(cell['read']['median_us'])} / {us(cell['read']['p99_us'])}{hits}"
                f" · w {us(cell['write']['median_us'])}"
            )
        rows.append(row)
    return table(header, rows)


def cost_cell(r: Run, lib: str, write_ratio: float) -> dict[str, Any] | None:
    for cell in r.results.get(lib, {}).get("cost") or []:
        if abs(cell["write_ratio"] - write_ratio) < 1e-9:
            return cell
    return None


def cost_total(cell: dict[str, Any]) -> float:
    return sum(cell[k] or 0.0 for k in ("client_us", "postgres_us", "redis_us"))


def section_cost(r: Run) -> str:
    header = ["writes", *(r.labels[i] for i in r.ids)]
    rows = []
    for w in r.raw["config"]["mixed"]["write_ratios"]:
        row = [f"{w:.0%}"]
        for i in r.ids:
            cell = cost_cell(r, i, w)
            if cell is None:
                row.append(DASH)
                continue
            parts = " + ".join(us(cell[k]) for k in ("client_us", "postgres_us", "redis_us"))
            row.append(f"**{us(cost_total(cell))}** ({parts})")
        rows.append(row)
    return table(header, rows)


def cell_name(r: Run, cell: dict[str, Any]) -> str:
    mixed = r.raw["config"]["mixed"]
    name = f"{cell['workers']} workers, {cell['write_ratio']:.0%} writes"
    if cell["duration"] > mixed["duration"]:
        name += f", {mixed['long_factor']}{TIMES} longer run"
    return name


def section_stale(r: Run) -> tuple[str, list[str]]:
    rows = []
    details: list[str] = []
    for i in r.ids:
        cells = list(r.cells(i))
        long = (r.results.get(i, {}).get("mixed") or {}).get("long")
        if long:
            cells.append(long)

        def total(key: str, cells: list[dict[str, Any]] = cells) -> int:
            return sum(c.get(key, 0) for c in cells)

        worst = [c for c in cells if c["stale"]]
        where = "; ".join(
            f"{cell_name(r, c)}: {c['stale']} ({c['stale_items']} keys)" for c in worst
        )
        stale = total("stale")
        rows.append(
            [
                r.labels[i],
                f"{total('reads'):,}",
                f"{total('checked'):,}",
                f"**{stale}**" if stale else "0",
                f"{total('window'):,}",
                f"{total('differs'):,}",
                where or DASH,
            ]
        )
        seen: set[tuple[Any, ...]] = set()
        for c in worst:
            for e in c["stale_examples"]:
                signature = (e["by"], e["key"], e["cached"], e["committed_before_read"])
                if signature in seen:
                    continue
                seen.add(signature)
                what = (
                    f"the version sum of category {e['key']}"
                    if e["by"] == "category"
                    else f"get({e['by']}=) of item {e['key']}"
                )
                hit = "a cache hit" if e["hit"] else "not a cache hit"
                details.append(
                    f"{r.labels[i]}, {cell_name(r, c)}: "
                    f"{what} returned {e['cached']} ({hit}) when {e['committed_before_read']} "
                    f"had been committed and invalidated before the read began (the database: "
                    f"{e['in_db_before']} before, {e['in_db_after']} after)"
                )
    header = [
        "library",
        "timed reads",
        "reads checked",
        "stale",
        "in the commit window",
        "differs (any reason)",
        "stale by cell",
    ]
    return table(header, rows), details


def _memory_row(label: str, cell: dict[str, Any] | None) -> list[str]:
    if not cell or not cell.get("memory"):
        return [label, DASH, DASH, DASH, DASH, DASH]
    mem = cell["memory"]
    touched = max(cell["touched"], 1)
    return [
        label,
        f"{cell['reads'] + cell['writes']:,} ops, {cell['duration']:g} s",
        f"{mem['keys']:,}",
        mib(mem["delta"]),
        f"{cell['touched']:,}",
        f"{mem['keys'] / touched:.1f} keys, {mem['delta'] / touched:,.0f} B",
    ]


def section_memory(r: Run) -> str:
    n, w = r.raw["config"]["mixed"]["memory_cell"]
    rows = []
    for i in r.ids:
        if not r.uses_redis(i):
            continue
        rows.append(_memory_row(r.labels[i], _last(r.cell(i, n, w))))
        long = (r.results.get(i, {}).get("mixed") or {}).get("long")
        if long:
            rows.append(
                _memory_row(
                    f"{r.labels[i]}, {r.raw['config']['mixed']['long_factor']}{TIMES} longer", long
                )
            )
    header = [
        "library",
        "workload",
        "keys",
        "used_memory (over empty)",
        "items touched",
        "per item touched",
    ]
    return table(header, rows)


def bounded_verdicts(r: Run) -> list[str]:
    out = []
    n, w = r.raw["config"]["mixed"]["memory_cell"]
    for i in r.ids:
        long = (r.results.get(i, {}).get("mixed") or {}).get("long")
        short = _last(r.cell(i, n, w))
        if not long or not short or not long.get("memory") or not short.get("memory"):
            continue
        per_short = short["memory"]["delta"] / max(short["touched"], 1)
        per_long = long["memory"]["delta"] / max(long["touched"], 1)
        keys_short = short["memory"]["keys"] / max(short["touched"], 1)
        keys_long = long["memory"]["keys"] / max(long["touched"], 1)
        growth = per_long / per_short if per_short else math.nan
        verdict = "stays bounded" if growth < 1.5 else "keeps growing"
        out.append(
            f"- **{r.labels[i]}**: {verdict} — per item touched, "
            f"{keys_short:.1f} → {keys_long:.1f} keys and "
            f"{per_short:,.0f} → {per_long:,.0f} bytes ({growth:.2f}{TIMES}) "
            f"while the run made {long['writes'] / max(short['writes'], 1):.0f}{TIMES} "
            "as many writes."
        )
    return out


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def section_targets(r: Run) -> list[str]:
    """Each of issue #7's targets this run can check, with the figure and whether it holds."""
    if FC not in r.ids or "cacheops" not in r.ids:
        return ["Not measured in this run (it needs both freshcache (Redis) and cacheops)."]
    out = []

    def against(name: str, label: str, peer: str, limit: float) -> None:
        ours, theirs = r.median(FC, name), r.median(peer, name)
        if ours is None or theirs is None:
            return
        value = ours / theirs
        out.append(
            f"- {label} ≤ {limit:g}{TIMES} {r.labels[peer]}: measured {value:.2f}{TIMES} "
            f"({us(ours)} µs vs {us(theirs)} µs) — {_verdict(value <= limit)}."
        )

    against("get_pk", "get(pk=) hit", "cacheops", TARGET_GET_RATIO)
    against("get_slug", "get(slug=) hit", "cacheops", TARGET_GET_RATIO)
    against("fetch_20", "fetch of 20 rows, hit", "cacheops", 0.8)
    against("count", "count() hit", "cacheops", 0.8)
    if "none" in r.ids:
        against("miss_get_pk", "get(pk=) cold miss", "none", 1.3)
    against("save", "save() with invalidation", "cacheops", 0.6)
    inlined, theirs = r.median(FC, "save_inlined"), r.median("cacheops", "save_inlined")
    if inlined is not None and theirs is not None:
        out.append(
            f"  - the same without prepared statements (Django's default database options): "
            f"{inlined / theirs:.2f}{TIMES} ({us(inlined)} µs vs {us(theirs)} µs)."
        )
    invalidate = r.median(FC, "invalidate_model")
    if invalidate is not None:
        out.append(
            f"- invalidate_model with {r.raw['config']['invalidate_keys']:,} cached queries "
            f"< 1 ms: measured {us(invalidate)} µs — {_verdict(invalidate < 1000)}."
        )
    for peer, limit in (("cacheops", 1.2), ("cachalot", 2.0)):
        if peer not in r.ids:
            continue
        cells = []
        for n, w in _mixed_rows(r):
            ours, theirs = r.cell(FC, n, w), r.cell(peer, n, w)
            if n > 2 or not ours or not theirs or not theirs["throughput"]:
                continue
            cells.append((n, w, ours["throughput"] / theirs["throughput"]))
        if cells:
            worst = min(value for _, _, value in cells)
            shown = ", ".join(f"{w:.0%}/{n}w {value:.2f}{TIMES}" for n, w, value in cells)
            out.append(
                f"- mixed-workload throughput ≥ {limit:g}{TIMES} {r.labels[peer]} with 1 and 2 "
                f"workers: {shown} — {_verdict(worst >= limit)}."
            )
    stale = sum(c["stale"] for c in r.cells(FC))
    checked = sum(c.get("checked", 0) for c in r.cells(FC))
    if r.cells(FC):
        out.append(
            f"- 0 stale reads under the mixed workload: {stale} stale of {checked:,} checked — "
            f"{_verdict(stale == 0)}."
        )
    return out + _why_missed(r, out)


def _why_missed(r: Run, verdicts: list[str]) -> list[str]:
    """Where the time goes for each target this run missed (the design's costs, measured)."""
    missed = " ".join(v for v in verdicts if "not met" in v)
    if not missed:
        return []
    out = ["", "Where the time goes where a target is missed:", ""]
    floor = r.floor_median(FC, "get_pk")
    none_get = r.median("none", "get_pk") if "none" in r.ids else None
    if "cold miss" in missed and floor and none_get:
        out.append(
            f"- **Cold miss.** A miss makes one round trip to Redis before the query (it reads "
            f"the value and creates the missing stamps in one script call) and sends the store "
            f"without waiting for the reply. That one round trip, the raw `MGET` floor here, "
            f"costs {us(floor)} µs on this machine: {floor / none_get:.2f}{TIMES} a whole "
            f"uncached `get()` ({us(none_get)} µs) by itself, before any work of ours."
        )
    if "fetch of 20" in missed or "count()" in missed:
        out.append(
            "- **Fetches and counts.** A chain of `filter()`/`exclude()`/`order_by()`/slices "
            "reads without the compiler from its second read on; any other shape is keyed by "
            "its SQL, so its hit still runs Django's compiler. A fetch hit then builds "
            "instances from raw rows with the ORM's converters, where cacheops unpickles "
            "finished instances."
        )
    if "save()" in missed:
        none_save = r.median("none", "save") if "none" in r.ids else None
        ours = r.median(FC, "save")
        extra = (
            f" ({us(ours - none_save)} µs more than a plain `save()` here)"
            if (ours and none_save)
            else ""
        )
        out.append(
            "- **save().** On PostgreSQL it sends one statement, the `UPDATE` guarded by the "
            "values it sets to the columns the schemes need and returning them, then one round "
            f"trip to Redis that must be acknowledged before `save()` returns{extra}: the "
            "Redis round trip, computing the stamps, and Django's statement wrapper. The "
            "instance timed here was loaded by `get(pk=)`, so the save also writes its row "
            "through (the statement returns the whole row and checks the table's AFTER "
            "triggers in the catalog, and the round trip stores the row): that is the price "
            "of the next `get(pk=)` being a hit (see *get(pk=) miss after a write*)."
        )
    if "throughput" in missed:
        out.append(
            "- **Mixed workload.** A cell's throughput is bound by its slowest operations "
            "(misses after writes, saves), and by two cores shared with PostgreSQL, Redis "
            "and the other workers." + _uncached_ceiling(r) + _cpu_note(r)
        )
    return out


def _cpu_note(r: Run) -> str:
    """What one operation costs the machine at the highest write ratio, by library, and where
    freshcache's extra over no cache goes."""
    w = max(r.raw["config"]["mixed"]["write_ratios"])
    cells = {i: cost_cell(r, i, w) for i in r.ids}
    ours, bare = cells.get(FC), cells.get("none")
    if ours is None or bare is None:
        return ""
    others = ", ".join(
        f"{us(cost_total(c))} µs with {r.labels[i]}"
        for i, c in cells.items()
        if c is not None and i in ("none", "cacheops", "cachalot")
    )

    def delta(name: str, key: str) -> str:
        d = (ours[key] or 0.0) - (bare[key] or 0.0)
        return f"{name} {us(d)} µs" if d >= 0 else f"{name} {us(-d)} µs less"

    less = (ours["postgres_us"] or 0.0) < (bare["postgres_us"] or 0.0)
    why_less = " (its prepared statements cost PostgreSQL less than inlined ones)" if less else ""
    extra = ", ".join(
        delta(name, k)
        for name, k in (
            ("its process", "client_us"),
            ("PostgreSQL", "postgres_us"),
            ("Redis", "redis_us"),
        )
    )
    return (
        f" At {w:.0%} writes one operation costs {us(cost_total(ours))} µs of CPU with "
        f"freshcache against {others} ([CPU per operation](#cpu-per-operation)). What "
        f"freshcache adds to no cache is {extra}{why_less}: half the operations are writes, each "
        "followed by a Redis round trip that must be acknowledged, most reads are misses that "
        "make one before their query, and on loopback TCP a round trip costs CPU on both "
        "sides (the sender runs the receiver's network stack and wakes it up). Two workers "
        "share the two cores with PostgreSQL and Redis, so that CPU is throughput."
    )


def _uncached_ceiling(r: Run) -> str:
    """For each missed mixed cell, the target restated as a share of no cache's throughput.
    Where most reads miss (high write ratios) every library still sends every write and most
    reads to the database, so no cache is close to a bound for any cache there."""
    if "none" not in r.ids:
        return ""
    notes = []
    for peer, limit in (("cacheops", 1.2), ("cachalot", 2.0)):
        if peer not in r.ids:
            continue
        for n, w in _mixed_rows(r):
            ours, theirs, bare = r.cell(FC, n, w), r.cell(peer, n, w), r.cell("none", n, w)
            if n > 2 or not ours or not theirs or not bare or not theirs["throughput"]:
                continue
            if ours["throughput"] / theirs["throughput"] >= limit:
                continue
            ceiling = bare["throughput"] / theirs["throughput"]
            notes.append(
                f"{w:.0%}/{n}w: no cache itself runs at {ceiling:.2f}{TIMES} "
                f"{r.labels[peer]}, so {limit:g}{TIMES} {r.labels[peer]} is "
                f"{limit / ceiling:.2f}{TIMES} no cache; freshcache runs at "
                f"{ours['throughput'] / bare['throughput']:.2f}{TIMES} no cache"
            )
    if not notes:
        return ""
    return (
        " Restated against no cache at all, which bounds what a cache reaches where most "
        "reads miss: " + "; ".join(notes) + "."
    )


# -- the page -------------------------------------------------------------------------------------


def markdown(run: dict[str, Any]) -> str:
    r = Run(run)
    config = run["config"]
    mixed = config["mixed"]
    quick = (
        "\n> This is a **quick smoke run** (`QUICK=1`): few iterations, short cells. "
        "Run `make bench` for the figures to quote.\n"
        if config["quick"]
        else ""
    )
    stale_table, stale_details = section_stale(r)
    parts = [
        "# Benchmarks",
        "",
        "freshcache against no cache, "
        "[django-cacheops](https://github.com/Suor/django-cacheops) and "
        "[django-cachalot](https://github.com/noripyt/django-cachalot): the same models, rows "
        "and queries, each library in its own process with its own settings, on real "
        "PostgreSQL and Redis servers on loopback. This page is generated by `make bench` "
        "(`benchmarks/run.py`); every figure on it comes from the one run described below.",
        quick,
        "## How to run",
        "",
        "```sh",
        "make bench            # the full run, about 25 minutes on 2 cores",
        "make bench QUICK=1    # a ~2-minute smoke run (report: benchmarks/.results/quick/)",
        "make bench LONG=1     # adds the 10x longer memory run (about 5 more minutes)",
        "make bench LIBS=freshcache,cacheops   # a subset (ids: none, cacheops, cachalot,",
        "                                      #   freshcache, freshcache-locmem)",
        "```",
        "",
        "The suite starts private PostgreSQL and Redis servers (as `make test` does, or reuses "
        "the ones named by `FRESHCACHE_TEST_*`), installs each peer's latest release from PyPI "
        "into its own virtualenv (`.venv-bench-cacheops`, `.venv-bench-cachalot`; freshcache "
        "runs from this repository in `.venv-bench`), and gives every library its own "
        "PostgreSQL database and Redis database number. Raw results are kept in "
        "`benchmarks/.results/`.",
        "",
        "## Machine and run",
        "",
        section_machine(r),
        "",
        load_note(r),
        "",
        "Configuration: cacheops and freshcache cache every operation of the benchmark models "
        "(`{'ops': 'all'}` profiles); cachalot caches every query by itself, through Django's "
        "built-in `RedisCache`; every cached value lives one hour. hiredis is installed for "
        f"every library. Data: {config['rows']:,} items in {config['categories']} categories. "
        "Django 5.2 (LTS) is the newest release all three support: cacheops 7.2 declares "
        "Django up to 5.2, cachalot 2.9.1 supports 4.2 to 6.1.",
        "",
        "## Cache hits",
        "",
        f"Median / p99 in microseconds over {config['iterations']:,} timed runs after "
        f"{max(config['warmup'], 100)} warm-up runs, in {config['rounds']} rounds in which the "
        "libraries take turns; each operation rotates over 100 keys (items) or 10 "
        'categories, all cached. A † marks a "hit" that still sent a query to the database. '
        "The floor is the same freshcache payloads fetched with a raw redis-py `MGET` of the "
        "keys the hit read, plus msgpack decoding of the rows, without building model "
        "instances: what any Redis-backed cache has to pay at least.",
        "",
        section_hits(r),
        "",
        f"![Median hit latency per operation]({'img/' + LATENCY_PNG})",
        "",
        "## Misses, writes, invalidation, keys",
        "",
        "Median / p99 in microseconds. A cold miss reads a key never read before; a miss after "
        "a write reads a key whose cached value a `save()` just invalidated. `save()` is timed "
        "on an item whose cached reads exist (they are refilled, untimed, before each save); "
        "*save(), no prepared statements* is the same with psycopg's prepared statements off, "
        "as Django's default database options have them (freshcache's statements are then "
        "parsed and planned on every call). "
        "`invalidate_model` is timed with that many distinct queries cached "
        f"({config['invalidate_repeats']} repetitions, refilled in between). The cache key "
        "alone is what a library computes from a queryset before its first round trip on a "
        "hit; none of the three exposes it publicly, so it is timed through their internals: "
        + "; ".join(
            f"{r.labels[i]}: `{(r.results[i].get('micro') or {}).get('key_api')}`"
            for i in r.ids
            if i in ("cacheops", "cachalot", FC)
        )
        + ".",
        "",
        section_other(r),
        "",
        "## Ratios",
        "",
        "freshcache's median divided by each peer's, from the same run: below 1 means "
        "freshcache is faster.",
        "",
        section_ratios(r),
        "",
        "### Issue #7 targets",
        "",
        *section_targets(r),
        "",
        "### Each library against its own floor",
        "",
        "The floor for each Redis-backed library: its own hit keys in one raw `MGET`, decoded "
        "its own way (pickle for cacheops and cachalot, msgpack for freshcache). The number of "
        "keys one hit reads is in parentheses.",
        "",
        section_floors(r),
        "",
        "## Mixed workload",
        "",
        f"Workers are separate processes running for {mixed['duration']:g} s per round "
        f"({mixed['warmup']:g} s warm-up not counted); {_rounds_text(mixed)} "
        "Each picks an item from a Zipf "
        f"distribution (s = {mixed['zipf_s']}) over all {config['rows']:,} items. A read is "
        "`get(pk=)` (40%), `get(slug=)` (40%) or the sum of `version` over the item's category, "
        "`filter(category_id=).aggregate(Sum())` (20%); a write loads the item, changes its "
        "`version` and calls `save()`. Throughput counts only the timed ORM calls: the "
        "harness's checks and locks are subtracted from each worker's time. Subtracting "
        "cannot give back the CPU they take from the other workers where workers outnumber "
        "cores, so they are kept lean: locks, the version counter and the records live in "
        "memory the workers share, so only the checked reads' own queries reach a server. "
        "The in-process "
        "freshcache backend runs with one worker only: with "
        "several processes each would have its own cache, which it warns about.",
        "",
        "### Throughput (operations per second)",
        "",
        section_throughput(r),
        "",
        f"![Throughput against write ratio]({'img/' + THROUGHPUT_PNG})",
        "",
        "### Read latency and hit ratio",
        "",
        "Read median / p99 in microseconds, the share of reads that sent no query to the "
        "database, and the median write (load + `save()`).",
        "",
        section_latency(r),
        "",
        *(
            [
                "### CPU per operation",
                "",
                "With more worker processes than cores, a cell is bound by CPU, and throughput "
                "follows what an operation costs the machine. Here the same operation mix runs "
                f"in one process, {config['cost_ops']:,} operations per write ratio after "
                f"{config['cost_warmup']} warm-up ones"
                + (
                    f" (the median of {config['cost_rounds']} rounds)"
                    if config.get("cost_rounds", 1) > 1
                    else ""
                )
                + ", writes changing `stock` instead of `version`. Microseconds of CPU per "
                "operation: **total** (the library's process + its PostgreSQL backend + Redis; "
                f"{DASH} where there is none).",
                "",
                section_cost(r),
                "",
            ]
            if config.get("cost_rounds")
            else []
        ),
        "### Stale reads",
        "",
        f"{mixed['check_rate']:.0%} of reads are checked. Writers take a per-item lock and "
        "number their writes from a global counter, so versions, and the category sums, only "
        "grow. Once `save()` has returned (committed and invalidated) a writer records the "
        "item's version in memory the workers share, along with each category's sum of the "
        "recorded versions. A checked read takes those records *before* it starts, reads the "
        "database, reads through the cache, and reads the database again, on a connection no "
        "library sees. It is **stale** when it returned less than what had been committed and "
        "invalidated before it began: the cached answer differs from the database's for a read "
        "that began after the last write to that key committed. *In the commit window* counts "
        "reads that returned less than the database held when they began, but whose write had "
        "not finished `save()` yet (committed, not yet invalidated): every cache that "
        "invalidates after commit has that window. *Differs* counts every answer that did not "
        "match the database right after the read, racing writes included, which is not an "
        "error by itself.",
        "",
        stale_table,
        "",
        *(f"- {d}" for d in stale_details),
        "",
        "## Redis memory",
        "",
        f"After the {mixed['memory_cell'][0]}-worker, {mixed['memory_cell'][1]:.0%}-write cell "
        "(its last round; each round starts with the library's Redis database empty): "
        "the keys in that database "
        "and `used_memory` over what the server used with it empty. Items touched is how many "
        "distinct items the workers read or wrote.",
        "",
        section_memory(r),
        "",
        "Bounded here means that the keys and bytes per item touched stay about the same "
        f"(within 1.5{TIMES}) when the cell runs {mixed['long_factor']}{TIMES} longer: "
        "memory follows the data that was read, not the number of writes or invalidations.",
        "",
        *(
            bounded_verdicts(r)
            or [
                "Whether it stays bounded is measured by `make bench LONG=1`, which reruns "
                f"that cell {mixed['long_factor']}{TIMES} longer; it was not run this time."
            ]
        ),
        "",
    ]
    return "\n".join(parts)


# -- the cluster section --------------------------------------------------------------------------

CLUSTER_ONLY_PAGE = (
    "# Benchmarks\n\n"
    "Only the Redis Cluster section so far: `make bench` (with the same `QUICK`) writes the rest "
    "of this page and keeps this section.\n"
)


def compare_table(
    r: Run,
    ops: Sequence[tuple[str, str]],
    ours: str,
    base: str,
    floors: Sequence[tuple[str, str]] = (),
) -> str:
    """Median / p99 per library, ``ours`` ÷ ``base`` (medians), then the floors of ``floors``
    (library, column header) and the keys / primaries of ``ours``'s hits."""
    floors = [(lib, label) for lib, label in floors if lib in r.ids]
    header = ["operation", *(r.labels[i] for i in r.ids)]
    header.append(f"{r.labels[ours]} ÷ {r.labels[base]}")
    if floors:
        header += [label for _, label in floors]
        header.append("keys / primaries per hit")
    rows = []
    for name, label in ops:
        if name == "invalidate_model":
            keys = next((e["keys"] for i in r.ids if (e := r.op(i, name)) and e.get("keys")), None)
            label = f"invalidate_model, {keys:,} keys cached" if keys else label
        row = [label, *(cell_text(r.op(i, name), i != "none") for i in r.ids)]
        row.append(ratio(r.median(ours, name), r.median(base, name)))
        if floors:
            row += [cell_text(r.floor(lib, name)) for lib, _ in floors]
            f = r.floor(ours, name)
            spread = f" / {f['nodes']:.1f}" if f and "nodes" in f else ""
            row.append(f"{f['keys']}{spread}" if f else DASH)
        rows.append(row)
    return table(header, rows)


def cluster_throughput(r: Run, ours: str, base: str | None) -> str:
    header = ["writes", "workers", *(r.labels[i] for i in r.ids)]
    if base:
        header.append(f"{r.labels[ours]} ÷ {r.labels[base]}")
    rows = []
    for n, w in _mixed_rows(r):
        row = [f"{w:.0%}", str(n)]
        for i in r.ids:
            cell = r.cell(i, n, w)
            row.append(f"{cell['throughput']:,.0f}" if cell else DASH)
        if base:
            a, b = r.cell(ours, n, w), r.cell(base, n, w)
            row.append(ratio(a["throughput"], b["throughput"]) if a and b else "n/a")
        rows.append(row)
    return table(header, rows)


def _share(part: int, whole: int) -> str:
    return f"{part:,} ({100 * part / whole:.0f}%)" if whole else f"{part:,}"


def section_distribution(r: Run, lib: str) -> tuple[str, list[str]]:
    """Keys on each primary after every mixed cell, and the commands each processed during it."""
    cells = [c for n, w in _mixed_rows(r) if (c := r.cell(lib, n, w))]
    long = (r.results.get(lib, {}).get("mixed") or {}).get("long")
    if long:
        cells.append(long)
    cells = [c for c in cells if (c.get("memory") or {}).get("nodes")]
    if not cells:
        return "Not measured in this run.", []
    count = max(len(c["memory"]["nodes"]) for c in cells)
    names = [f"primary {k}" for k in range(1, count + 1)]
    header = ["cell", *(f"keys: {n}" for n in names), "keys", *(f"commands: {n}" for n in names)]
    rows = []
    spread: list[float] = []
    busiest: list[float] = []
    for c in cells:
        nodes = c["memory"]["nodes"]
        keys = [n["keys"] for n in nodes]
        commands = [n["commands"] for n in nodes]
        total_keys, total_commands = sum(keys), sum(commands)
        if total_keys:
            spread.append(max(keys) / (total_keys / len(keys)))
        if total_commands:
            busiest.append(max(commands) / (total_commands / len(commands)))
        pad = [DASH] * (count - len(nodes))
        name = cell_name(r, c).replace("1 workers", "1 worker")
        rows.append(
            [
                name,
                *(_share(k, total_keys) for k in keys),
                *pad,
                f"{total_keys:,}",
                *(_share(k, total_commands) for k in commands),
                *pad,
            ]
        )
    notes = []
    if spread and busiest:
        notes.append(
            f"The fullest primary held {min(spread):.2f}{TIMES} to {max(spread):.2f}{TIMES} "
            f"its even share of the keys, and the busiest processed {min(busiest):.2f}{TIMES} "
            f"to {max(busiest):.2f}{TIMES} its even share of the commands, depending on the "
            "cell."
        )
    return table(header, rows), notes


def cluster_machine(r: Run, lib: str) -> str:
    m = r.raw["machine"]
    cluster = r.results.get(lib, {}).get("versions", {}).get("cluster") or {}
    primaries = len(cluster.get("primaries", [])) or "?"
    config = r.raw["config"]
    mixed = config["mixed"]
    rows = [
        ("machine", f"{m['nproc']} cores, {m['cpu']}, {m['memory']} RAM, {m['os']}"),
        (
            "Python / Django / PostgreSQL",
            " / ".join(r.version(lib, k) for k in ("python", "django", "postgresql")),
        ),
        (
            "Redis Cluster",
            f"{primaries} primaries + {cluster.get('replicas', '?')} replicas, Redis "
            f"{cluster.get('version', '?')}, loopback; `read_from_replicas` off (the default)",
        ),
        ("Redis", r.version(lib, "redis_server")),
        (
            "redis-py / hiredis / psycopg",
            " / ".join(r.version(lib, k) for k in ("redis_py", "hiredis", "psycopg")),
        ),
        ("django-freshcache", f"{r.version(lib, 'library')} ({m['commit']})"),
        (
            "configuration",
            f"{config['iterations']:,} timed runs per operation in {config['rounds']} rounds; "
            f"mixed cells of {mixed.get('rounds', 1)} {_plural(mixed.get('rounds', 1), 'round')} "
            f"of {mixed['duration']:g} s ({mixed['warmup']:g} s warm-up)",
        ),
        ("command", f"`{r.raw['command']}`"),
        ("date, duration", f"{m['date']}, {r.raw['seconds'] / 60:.1f} minutes"),
    ]
    return table(["", ""], [[k, v] for k, v in rows])


def cluster_load_note(r: Run) -> str:
    load = r.raw.get("load") or {}
    cores = r.raw["machine"]["nproc"]
    parts = [
        f"{phase} {v['mean']:.1f} (max {v['max']:.1f})"
        for phase in ("micro", "mixed")
        if (v := load.get(phase))
    ]
    if not parts:
        return ""
    text = f"Load average (1 minute) during the run, on {cores} cores: " + ", ".join(parts) + "."
    micro = load.get("micro")
    if micro and micro["mean"] > 1.5:
        text += (
            " **Other processes were competing for the CPU during this run**: absolute "
            "figures are inflated and noisy; compare the columns, which took turns."
        )
    return text


def cluster_markdown(run: dict[str, Any]) -> str:
    """The "freshcache on Redis Cluster" section, markers included."""
    r = Run(run)
    config = run["config"]
    mixed = config["mixed"]
    ours = next((i for i in r.ids if i == FC_CLUSTER), r.ids[-1])
    base = FC if FC in r.ids else ("none" if "none" in r.ids else None)
    stale_table, stale_details = section_stale(r)
    distribution, distribution_notes = section_distribution(r, ours)
    quick = (
        "> This is a **quick smoke run** (`BACKEND=cluster QUICK=1`): few iterations, short "
        "cells. Run `make bench BACKEND=cluster` for the figures to quote.\n"
        if config["quick"]
        else ""
    )
    hit_ops = r.micro_ops(HIT_OPS)
    other_ops = r.micro_ops(OTHER_OPS)
    n, w = mixed["memory_cell"]
    parts = [
        CLUSTER_BEGIN + " generated by `make bench BACKEND=cluster`; `make bench` keeps it -->",
        "## freshcache on Redis Cluster",
        "",
        *([quick] if quick else []),
        "freshcache's cluster engine (`FRESHCACHE_BACKEND = 'cluster'`, see "
        "[Scaling out](scaling-out.md)) on a private Redis Cluster, against "
        + " and ".join(r.labels[i] for i in r.ids if i != ours)
        + ", in a run of its own: the same models, rows, queries and harness as above, the "
        "libraries taking turns in the same way, with fewer timed runs and shorter cells. "
        "Compare the columns of one table; the figures above come from another run. The "
        "cluster library owns the whole cluster (a cluster has database 0 only): its worker "
        "sends `FLUSHALL` to every primary when it starts and before every mixed cell, and "
        "keys and memory are summed over the primaries (replicas not counted).",
        "",
        "```sh",
        "make bench BACKEND=cluster           # this section, about 6 minutes on 2 cores",
        "make bench BACKEND=cluster QUICK=1   # a smoke run (report: benchmarks/.results/quick/)",
        "```",
        "",
        "The cluster is the test suite's (`scripts/services.sh`: three primaries with a replica "
        "each, on loopback ports); raw results are kept in `benchmarks/.results/cluster/`. "
        "`LIBS=freshcache-cluster` runs the cluster library alone.",
        "",
        "### Cluster run",
        "",
        cluster_machine(r, ours),
        "",
        cluster_load_note(r),
        "",
        "### Cache hits on the cluster",
        "",
        f"Median / p99 in microseconds over {config['iterations']:,} timed runs, as above. "
        "The floors are each hit's own keys fetched with a raw redis-py client and decoded "
        "(msgpack), without building model instances: on one Redis one `MGET`; on the cluster, "
        "where one `MGET` cannot span slots, what freshcache's cluster engine sends, one "
        "non-transactional cluster pipeline of single-key `GET`s (redis-py writes one request "
        "to every primary involved before reading any reply). The last column is the keys one "
        "hit reads and the primaries they live on, on average over the 100 keys or 10 "
        "categories rotated.",
        "",
        compare_table(
            r,
            hit_ops,
            ours,
            base or ours,
            [(FC, "floor, one Redis: MGET"), (ours, "floor, cluster: pipelined GETs")],
        ),
        "",
        "### Misses, writes and invalidation on the cluster",
        "",
        "Median / p99 in microseconds, as above"
        + (
            f"; `invalidate_model` with {config['invalidate_keys']:,} queries cached, "
            + (
                "timed once"
                if config["invalidate_repeats"] == 1
                else f"{config['invalidate_repeats']} repetitions"
            )
            if any(name == "invalidate_model" for name, _ in other_ops)
            else ""
        )
        + ". The cache key alone does not depend on the backend and is not timed here.",
        "",
        compare_table(r, other_ops, ours, base or ours),
        "",
        "### Mixed workload on the cluster",
        "",
        f"The workload described above: processes reading and writing Zipf-distributed items "
        f"for {mixed['duration']:g} s per cell ({mixed['warmup']:g} s warm-up not counted); "
        "throughput in operations per second.",
        "",
        cluster_throughput(r, ours, base),
        "",
        f"![Throughput against write ratio, Redis Cluster]({'img/' + CLUSTER_THROUGHPUT_PNG})",
        "",
        "Read median / p99 in microseconds, the share of reads that sent no query to the "
        "database, and the median write (load + `save()`):",
        "",
        section_latency(r),
        "",
        f"Stale reads, checked as above ({mixed['check_rate']:.0%} of reads):",
        "",
        stale_table,
        "",
        *(f"- {d}" for d in stale_details),
        *([""] if stale_details else []),
        "### Keys and memory on the cluster",
        "",
        f"After the {n}-worker, {w:.0%}-write cell, as above; for the cluster, keys and "
        "`used_memory` are summed over the primaries, less each primary's replication backlog "
        "and replica output buffers (the backlog fills up with the replicated writes and "
        "`FLUSHALL` does not empty it; the single Redis has no replica).",
        "",
        section_memory(r),
        "",
        *bounded_verdicts(r),
        *([""] if bounded_verdicts(r) else []),
        "### Key distribution over the primaries",
        "",
        "After each mixed cell of freshcache on the cluster: the keys on each primary "
        "(`DBSIZE`), and the commands each primary processed during the cell (from "
        "`total_commands_processed`; the harness's own sampling adds about four a second). "
        "Primaries are numbered by address. Values and stamps spread evenly over the slots; "
        "a table's registry and the global epoch are single keys that every cached read of "
        "the table fetches along with its stamps, so the primaries holding them serve one more "
        "`GET` per read each: with one busy table (here the items) that is where the commands "
        "are uneven. Keys by kind and memory per key are in "
        "[Scaling out](scaling-out.md#key-distribution-and-memory) "
        "(`scripts/cluster_figures.py`).",
        "",
        distribution,
        "",
        *distribution_notes,
        "",
        CLUSTER_END,
    ]
    return "\n".join(parts)


# -- plots ----------------------------------------------------------------------------------------


def plot_latency(r: Run, path: Path) -> None:
    import matplotlib.pyplot as plt

    series = [(r.labels[i], [r.median(i, n) for n, _ in HIT_OPS]) for i in r.ids]
    if FC in r.ids:
        series.append(("floor (freshcache payload)", [r.floor_median(FC, n) for n, _ in HIT_OPS]))
    fig, ax = plt.subplots(figsize=(9, 7))
    height = 0.8 / max(len(series), 1)
    for k, (label, values) in enumerate(series):
        ys = [j + k * height for j in range(len(HIT_OPS))]
        ax.barh(ys, [v or 0 for v in values], height=height, label=label)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(HIT_OPS))])
    ax.set_yticklabels([label for _, label in HIT_OPS])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median latency of a cache hit, µs (log scale)")
    ax.set_title("Hit latency per operation")
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_throughput(r: Run, path: Path, title: str = "Mixed workload throughput") -> None:
    import matplotlib.pyplot as plt

    mixed = r.raw["config"]["mixed"]
    workers: list[int] = mixed["workers"]
    ratios: list[float] = mixed["write_ratios"]
    fig, axes = plt.subplots(1, len(workers), figsize=(4 * len(workers), 4), sharey=True)
    axes = list(axes) if len(workers) > 1 else [axes]
    for ax, n in zip(axes, workers, strict=True):
        for i in r.ids:
            points = [(w, c["throughput"]) for w in ratios if (c := r.cell(i, n, w))]
            if points:
                ax.plot(
                    [f"{w:.0%}" for w, _ in points],
                    [t for _, t in points],
                    marker="o",
                    label=r.labels[i],
                )
        ax.set_title(f"{n} worker{'s' if n > 1 else ''}")
        ax.set_xlabel("share of writes")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("operations per second")
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cluster_block(page: str) -> tuple[int, int] | None:
    """The start and end offsets of the cluster section in ``page``, end marker included."""
    begin = page.find(CLUSTER_BEGIN)
    if begin < 0:
        return None
    end = page.find(CLUSTER_END, begin)
    if end < 0:
        raise SystemExit(f"the page has {CLUSTER_BEGIN!r} but no {CLUSTER_END!r}: fix it by hand")
    return begin, end + len(CLUSTER_END)


def write(run: dict[str, Any]) -> Path:
    """Write the page and its plots; return the page's path.

    A full run goes to ``docs/``; a quick run to ``benchmarks/.results/quick/``, so that a smoke
    test never replaces the published figures. A cluster run replaces only the cluster section
    of that page (adding it at the end when there is none); any other run rewrites the page and
    keeps the cluster section it had.
    """
    import matplotlib

    matplotlib.use("Agg")
    doc = QUICK_DOC if run["config"]["quick"] else DOC
    img = doc.parent / "img"
    img.mkdir(parents=True, exist_ok=True)
    r = Run(run)
    old = doc.read_text() if doc.exists() else ""
    bounds = cluster_block(old)
    if run.get("backend") == "cluster":
        plot_throughput(
            r, img / CLUSTER_THROUGHPUT_PNG, "Mixed workload throughput, Redis Cluster run"
        )
        section = cluster_markdown(run)
        if bounds is not None:
            page = old[: bounds[0]] + section + old[bounds[1] :]
        else:
            page = (old or CLUSTER_ONLY_PAGE).rstrip("\n") + "\n\n" + section + "\n"
        doc.write_text(page)
        return doc
    plot_latency(r, img / LATENCY_PNG)
    plot_throughput(r, img / THROUGHPUT_PNG)
    page = markdown(run)
    if bounds is not None:
        page += "\n" + old[bounds[0] : bounds[1]] + "\n"
    doc.write_text(page)
    return doc
