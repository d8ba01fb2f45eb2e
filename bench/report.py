#!/usr/bin/env python3
"""Writes bench/RESULTS.md from the raw results of bench/run (bench/work/results.json).

    bench/report.py bench/work/results.json bench/RESULTS.md

Medians over rounds with min-max, ratios against the bare spawn limit and each peer measured in
the same run, and the targets of the benchmark issue, each marked met or not. A PNG of the latency
distributions is drawn when matplotlib is available (bench/peers/.venv has it after setup).

A run of some workloads only (`bench/run --only W8,W9`) keeps the other workloads' sections of the
RESULTS.md it replaces, and their rows of its targets table, each marked with the date and commit
of the run that measured it: RESULTS.md always shows the latest figure of every workload.
"""

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def med(values):
    return statistics.median(values) if values else None


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) < 100:
        s = f"{v:.2f}".rstrip("0").rstrip(".")
    else:
        s = f"{v:,.0f}"
    return f"{s}{unit}"


def cell(rs, key, unit=""):
    vals = [r[key] for r in rs if r.get(key) is not None]
    if not vals:
        return "-", None
    m = med(vals)
    if len(vals) == 1:
        return fmt(m, unit), m
    return f"{fmt(m, unit)} ({fmt(min(vals))}–{fmt(max(vals))})", m


def ratio(a, b, higher_better=True):
    if not a or not b:
        return "-"
    r = a / b if higher_better else b / a
    return f"{r:.2f}×"


def latency_table(lines, heading, r):
    """Appends a section's heading and its p50/p99 table of every system; returns worker's p99."""
    lines += [heading, "", "| system | p50 | p99 | worker p99 vs it |", "|---|---|---|---|"]
    wk = cell(r["worker"], "p99_ms")[1]
    for s, rs in r.items():
        lines.append(f"| {s} | {cell(rs, 'p50_ms', ' ms')[0]} | {cell(rs, 'p99_ms', ' ms')[0]} | "
                     f"{'-' if s == 'worker' else ratio(wk, cell(rs, 'p99_ms')[1], False)} |")
    return wk


def main(raw, out):
    data = json.loads(Path(raw).read_text())
    m, res = data["machine"], data["results"]
    lines = [
        "# Benchmark results",
        "",
        "Produced by `bench/run` (see `bench/README.md` for what each workload does and how the peers are",
        "set up). Every workload ran its systems alternately, round after round; figures are medians with",
        "the min–max over rounds in parentheses. Ratios compare with systems measured **in the same run**,",
        "oriented so that above 1× means worker is better.",
        "",
        f"- machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, {m['fs']}",
        f"- date: {m['date']}; worker commit `{m['commit']}`; rounds: {len(next(iter(next(iter(res.values())).values())))}",
        "",
    ]
    targets = []

    def w(name):
        return res.get(name, {})

    if "W1" in res:
        r = w("W1")
        lines += ["## W1 — drain: 10,000 runs of `/bin/true`, concurrency 2, enqueued in one call", "",
                  "| system | runs/s | worker vs it |", "|---|---|---|"]
        wk = cell(r["worker"], "runs_per_s")[1]
        for s, rs in r.items():
            text, v = cell(rs, "runs_per_s")
            note = " (1,000 tasks)" if s == "pueue" else ""
            lines.append(f"| {s}{note} | {text} | {'-' if s == 'worker' else ratio(wk, v)} |")
        lines.append("")
        spawn = cell(r.get("spawn", []), "runs_per_s")[1]
        if spawn:
            targets.append(("W1 ≥ 0.8 × bare spawn limit", f"{wk / spawn:.2f}×", wk / spawn >= 0.8))
        for p, want in (("pueue", 100), ("huey", 1), ("celery", 1), ("bullmq", 1)):
            v = cell(r.get(p, []), "runs_per_s")[1]
            if v:
                targets.append((f"W1 ≥ {want} × {p}", f"{wk / v:.1f}×", wk / v >= want))
    if "W2" in res:
        r = w("W2")["worker"]
        t, v = cell(r, "runs_per_s")
        b, _ = cell(r, "bytes_per_run", " B")
        lines += ["## W2 — enqueue: 100,000 runs in one `queue:add --count` call", "",
                  f"{t} runs/s (the whole command: process start, one transaction, ids printed); {b} of database per run.", ""]
        targets.append(("W2 ≥ 50,000 runs/s", fmt(v), v >= 50_000))
    if "W3" in res:
        r = w("W3")
        wk = latency_table(lines, "## W3 — pickup latency: enqueue on an idle daemon → the job's first instruction", r)
        lines += ["", "worker's enqueue is a `worker queue:add` process (start-up, configuration, one fsync'd "
                  "commit, wake-up datagram); the peers' are a library call in a running client, except pueue's "
                  "`pueue add`.", ""]
        targets.append(("W3 p99 ≤ 50 ms", fmt(wk, " ms"), wk <= 50))
    if "W3b" in res:
        r = w("W3b")
        wk = latency_table(lines, "## W3b — pickup latency through the API: `POST /api/v1/jobs/{job}/runs` → the job's first instruction", r)
        lines += ["", "worker: 1,000 POSTs back to back on one kept-alive connection (http.client), t0 before "
                  "the request is sent; the peers: their W3 driver with 1,000 enqueues from a warm client.", ""]
        peers = {s: cell(rs, "p99_ms")[1] for s, rs in r.items() if s != "worker"}
        peers = {s: v for s, v in peers.items() if v}
        if peers and wk:
            best = min(peers, key=peers.get)
            targets.append((f"W3b p99 ≤ 0.5 × the better peer ({best})", f"{wk / peers[best]:.2f}×",
                            wk <= 0.5 * peers[best]))
    if "W10" in res:
        r = w("W10")
        lines += ["## W10 — enqueue over HTTP: wrk, 8 kept-alive connections, `POST /api/v1/jobs/{job}/runs`", "",
                  "| system | runs/s | p99 | vs durability normal |", "|---|---|---|---|"]
        normal = cell(r.get("worker, durability normal", []), "runs_per_s")[1]
        for s, rs in r.items():
            text, v = cell(rs, "runs_per_s")
            lines.append(f"| {s} | {text} | {cell(rs, 'p99_ms', ' ms')[0]} | "
                         f"{'-' if s.endswith('normal') else ratio(v, normal)} |")
        full = cell(r.get("worker, durability full", []), "runs_per_s")[1]
        if normal and full:
            lines += ["", f"Under `durability: full` every commit waits for the disk: "
                      f"{1e6 / full - 1e6 / normal:,.0f} µs more per enqueued run on this machine's disk.", ""]
        if normal:
            targets.append(("W10 ≥ 20,000 runs/s (durability normal)", fmt(normal), normal >= 20_000))
    if "W4" in res:
        r = w("W4")["worker"]
        lines += ["## W4 — fire lag: a 1-second schedule for 65 s", "",
                  f"job's first instruction − fire instant: p50 {cell(r, 'p50_ms', ' ms')[0]}, p99 {cell(r, 'p99_ms', ' ms')[0]}, "
                  f"max {cell(r, 'max_ms', ' ms')[0]} over {cell(r, 'fires')[0]} fires; the enqueue itself (database "
                  f"`created_at` − fire instant): p99 {cell(r, 'enqueue_p99_ms', ' ms')[0]}.", ""]
        v = cell(r, "p99_ms")[1]
        targets.append(("W4 p99 ≤ 20 ms", fmt(v, " ms"), v <= 20))
    if "W5" in res:
        r = w("W5")
        lines += ["## W5 — idle cost over 30 s: 100 schedules (none due), 100,000 finished runs", "",
                  "| system | RSS | anonymous | CPU | processes |", "|---|---|---|---|---|"]
        for s, rs in r.items():
            anon = cell(rs, "anon_kb", " kB")[0]
            redis = cell(rs, "redis_rss_kb", " kB")[0]
            extra = f" (+ redis {redis})" if redis != "-" else ""
            lines.append(f"| {s} | {cell(rs, 'rss_kb', ' kB')[0]}{extra} | {anon} | {cell(rs, 'cpu_percent', ' %')[0]} | {cell(rs, 'processes')[0]} |")
        lines += ["", "worker's RSS is measured after it has advised the kernel that its start-up code pages may "
                  "be dropped from its mapping (they stay in the page cache); *anonymous* is the memory only "
                  "the daemon holds.", ""]
        rss = cell(r["worker"], "rss_kb")[1]
        cpu = cell(r["worker"], "cpu_percent")[1]
        targets.append(("W5 RSS ≤ 10 MB", fmt(rss / 1024, " MiB"), rss <= 10 * 1024))
        targets.append(("W5 CPU ≤ 0.5 %", fmt(cpu, " %"), cpu <= 0.5))
    if "W6" in res:
        r = w("W6")["worker"]
        t, v = cell(r, "runs_per_s")
        base = cell(w("W1").get("worker", []), "runs_per_s")[1]
        lines += ["## W6 — W1 with 1,000,000 finished and 100,000 delayed runs in the store", "",
                  f"{t} runs/s" + (f", {v / base:.2f}× W1's median" if base else "") + ".", ""]
        if base:
            targets.append(("W6 within 20 % of W1", f"{v / base:.2f}×", v >= 0.8 * base))
    if "W7" in res:
        r = w("W7")["worker"]
        t, v = cell(r, "ms_to_ready", " ms")
        lines += ["## W7 — start-up: exec → READY=1, 1,000 job files, 1,000,000 stored runs", "", f"{t}.", ""]
        targets.append(("W7 ≤ 300 ms", fmt(v, " ms"), v <= 300))

    if "W8" in res:
        r = w("W8")
        lines += ["## W8 — drain: 10,000 workflow runs of one `http` step (GET to a local server), concurrency 32", "",
                  "| system | runs/s | worker vs it |", "|---|---|---|"]
        wk = cell(r["worker"], "runs_per_s")[1]
        for s, rs in r.items():
            text, v = cell(rs, "runs_per_s")
            pool = rs[0].get("pool") if rs else None
            label = f"{s} ({pool} pool)" if pool else s
            lines.append(f"| {label} | {text} | {'-' if s == 'worker' else ratio(wk, v)} |")
        cpu = cell(r["worker"], "daemon_cpu_ms_per_run", " ms")[0]
        lines += ["", f"Every system GETs the same kind of server (`bench/peers/.build/httpd`, a fresh one per measurement) "
                  f"and must have made exactly N requests. worker is timed from exec of `worker daemon` (start-up "
                  f"included), the peers from a warm start. worker's daemon CPU (user + system): {cpu} per run.", ""]
        peers = {s: cell(rs, "runs_per_s")[1] for s, rs in r.items() if s != "worker"}
        peers = {s: v for s, v in peers.items() if v}
        if peers:
            best = max(peers, key=peers.get)
            targets.append((f"W8 ≥ 3 × the best peer ({best})", f"{wk / peers[best]:.2f}×", wk / peers[best] >= 3))
    if "W9" in res:
        r = w("W9")
        lines += ["## W9 — per-step overhead: a 10-step chain, 1,000 runs", "",
                  "Time from a step's end to its dependent's start, for each run and each of the 9 steps after the "
                  "first, measured outside worker (see `bench/README.md`): `http` steps as seen by the server they "
                  "call (its response to step k ready to write → step k+1's request arriving), process steps by "
                  "`stamp` (step k's first instruction → step k+1's). Nanosecond clocks; the 9,000 gaps of each "
                  "round make one distribution, and the figures are medians of the rounds' percentiles.", "",
                  "| chain | p50 | p90 | p99 | p99.9 | max | steps/s | daemon CPU per step |", "|---|---|---|---|---|---|---|---|"]
        labels = {"http": "`http` steps, one run at a time", "process": "`command` steps (`stamp`), one run at a time",
                  "http, 32 runs at once": "`http` steps, 32 runs at once"}
        for s, rs in r.items():
            lines.append(f"| {labels.get(s, s)} | {cell(rs, 'p50_ms', ' ms')[0]} | {cell(rs, 'p90_ms', ' ms')[0]} | "
                         f"{cell(rs, 'p99_ms', ' ms')[0]} | {cell(rs, 'p999_ms', ' ms')[0]} | {cell(rs, 'max_ms', ' ms')[0]} | "
                         f"{cell(rs, 'steps_per_s')[0]} | {cell(rs, 'daemon_cpu_ms_per_step', ' ms')[0]} |")
        stored = max((x.get("stored_gap_max_ms") or 0) for rs in r.values() for x in rs)
        lines += ["", f"The process chain's figure also holds the spawn of the next step and the previous process's "
                  f"exit. With 32 runs at once the CPU is saturated and the gap is mostly waiting: about the runs "
                  f"in flight / steps/s. The run objects show it only in milliseconds: a step's stored `finished_at` "
                  f"is when its task saw it end, its dependent's `started_at` when the engine started it (the "
                  f"largest stored difference over all runs: {fmt(float(stored), ' ms')}); hence the measurement "
                  f"from outside.", ""]
        v = cell(r.get("http", []), "p99_ms")[1]
        if v is not None:
            targets.append(("W9 p99 ≤ 2 ms (`http` chain, one run at a time)", fmt(v, " ms"), v <= 2))
        v = cell(r.get("process", []), "p99_ms")[1]
        if v is not None:
            targets.append(("W9 p99 ≤ 2 ms, same with process steps (not the target's subject)", fmt(v, " ms"), v <= 2))

    pg_sections(lines, targets, res)

    kept = previous(Path(out), res)
    if kept:
        # Sections of workloads not run this time, from the RESULTS.md being replaced, in order.
        ran = {wkey(k): k for k in res}
        body, sections = lines[10:], {}
        cur = None
        for line in body:
            m = re.match(r"## (W\d+[a-z]?) ", line)
            if m:
                cur = wkey(m.group(1))
            sections.setdefault(cur, []).append(line)
        for n, text in kept["sections"].items():
            sections[n] = text
        lines = lines[:10] + [x for n in sorted(k for k in sections if k is not None) for x in sections[n]]
        lines[8] = lines[8] + f"; workloads measured in this run: {', '.join(ran[k] for k in sorted(ran))}"
        lines.insert(9, "- the other workloads' sections and targets are kept from earlier runs, as marked")
        targets = sorted(kept["targets"] + [(n, g, "yes" if ok else "**no**") for n, g, ok in targets],
                         key=lambda t: wkey(re.match(r"W\d+[a-z]?", t[0]).group(0)))
    else:
        targets = [(n, g, "yes" if ok else "**no**") for n, g, ok in targets]

    lines[len(lines):] = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, got, ok in targets:
        lines.append(f"| {name} | {got} | {ok} |")
    lines.append("")

    png = plot(res, Path(out).with_name("latency.png"))
    if png or (kept and kept["plot"] and Path(out).with_name("latency.png").exists()):
        lines += ["## Distributions", "", "![pickup latency and fire lag](latency.png)", ""]
    steps_png = plot_steps(res, Path(out).with_name("steps.png"))
    if steps_png:
        lines += ["![W9 per-step overhead](steps.png)", ""]
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    Path(out).write_text("\n".join(lines))


def parallelism(s, rs):
    """How a W11/W12 system ran: daemons (or worker processes) x concurrency each."""
    r = rs[0] if rs else {}
    if s.startswith(("postgres", "sqlite")):
        d, c = r.get("nodes", 1), r.get("node_concurrency", r.get("concurrency", 2))
        return f"{d} daemon{'s' if d > 1 else ''} × {c} (job concurrency {r.get('job_concurrency', d * c)})"
    extra = f", batchSize {r['batch']}" if r.get("batch") else ""
    return f"{r.get('workers', 1)} worker processes × {r.get('concurrency', '?')}{extra}"


PG_LABELS = {"sqlite": "worker, SQLite", "postgres 1": "worker, PostgreSQL", "postgres 3": "worker, PostgreSQL",
             "graphile": "graphile-worker", "pgboss": "pg-boss"}


def pg_sections(lines, targets, res):
    """W11-W14: worker on PostgreSQL (several daemons sharing one store)."""
    if "W11" in res:
        r = res["W11"]
        n = next((x.get("n") for rs in r.values() for x in rs if x.get("n")), 10_000)
        lines += [f"## W11 — drain on PostgreSQL: {n:,} runs of `/bin/true`, 1 and 3 daemons sharing one store", "",
                  "| system | parallelism | runs/s | vs SQLite daemon | daemon CPU per run | server CPU per run |",
                  "|---|---|---|---|---|---|"]
        sq = cell(r.get("sqlite", []), "runs_per_s")[1]
        for s, rs in r.items():
            text, v = cell(rs, "runs_per_s")
            lines.append(f"| {PG_LABELS.get(s, s)} | {parallelism(s, rs)} | {text} | "
                         f"{'-' if s == 'sqlite' else ratio(v, sq)} | {cell(rs, 'daemon_cpu_ms_per_run', ' ms')[0]} | "
                         f"{cell(rs, 'server_cpu_ms_per_run', ' ms')[0]} |")
        versions = []
        for s in ("graphile", "pgboss"):
            v = (r.get(s) or [{}])[0].get("versions") or {}
            ver = v.get("graphile_worker") or v.get("pg_boss") or v.get("pgboss")
            if ver:
                versions.append(f"{PG_LABELS[s]} {ver}")
        lines += ["", "All enqueued in one call before anything consumes (worker: `queue:add true --count N` with no "
                  "daemon; the peers: one bulk insert). worker is timed from exec of the first `worker daemon` "
                  "(start-up included; the daemons are started back to back) to the store's last `finished_at`; "
                  "the peers from releasing their warm worker processes to the Nth completion. Each daemon has a "
                  "data and configuration directory of its own and the same job; the PostgreSQL store is a fresh "
                  "schema per measurement. *Server CPU* is that of the PostgreSQL processes serving the daemons' "
                  "connections, counted from the first completion seen (a lower bound)."
                  + (f" Peers: {', '.join(versions)}." if versions else ""), ""]
        pg1, pg3 = cell(r.get("postgres 1", []), "runs_per_s")[1], cell(r.get("postgres 3", []), "runs_per_s")[1]
        peers = {s: cell(rs, "runs_per_s")[1] for s, rs in r.items() if s in ("graphile", "pgboss")}
        peers = {s: v for s, v in peers.items() if v}
        if peers and pg3:
            best = max(peers, key=peers.get)
            targets.append((f"W11 3 daemons ≥ 2 × the better PostgreSQL peer ({PG_LABELS[best]}, 3 × 2)",
                            f"{pg3 / peers[best]:.2f}×", pg3 >= 2 * peers[best]))
        if pg1 and sq:
            targets.append(("W11 1 PostgreSQL daemon ≥ 0.7 × the SQLite daemon", f"{pg1 / sq:.2f}×", pg1 >= 0.7 * sq))
    if "W12" in res:
        r = res["W12"]
        n = next((x.get("n") for rs in r.values() for x in rs if x.get("n")), 10_000)
        lines += [f"## W12 — drain on PostgreSQL: {n:,} one-step `http` workflow runs (W8's), 3 and 1 daemons", "",
                  "| system | parallelism | runs/s | daemon CPU per run | server CPU per run |", "|---|---|---|---|---|"]
        for s, rs in r.items():
            label = "worker, SQLite (W8)" if s == "sqlite" else PG_LABELS.get(s, s)
            lines.append(f"| {label} | {parallelism(s, rs)} | {cell(rs, 'runs_per_s')[0]} | "
                         f"{cell(rs, 'daemon_cpu_ms_per_run', ' ms')[0]} | {cell(rs, 'server_cpu_ms_per_run', ' ms')[0]} |")
        lines += ["", "No process per run: each run's one step GETs a local server (`bench/peers/.build/httpd`, which must "
                  "have answered exactly N requests). Timed as W11.", ""]
        v = cell(r.get("postgres 3", []), "runs_per_s")[1]
        if v:
            targets.append(("W12 3 daemons ≥ 5,000 runs/s", fmt(v), v >= 5000))
    if "W13" in res:
        r = res["W13"].get("postgres 2", [])
        if r:
            x = r[0]
            lines += ["## W13 — rescue after `kill -9` of a node", "",
                      f"Two daemons, `node_timeout: {x.get('node_timeout')}` (the minimum; heartbeats every third of it); "
                      f"a run whose first attempt sleeps 300 s, `retry: {x.get('retry')}`. The run starts on node a, "
                      f"node b joins, a gets SIGKILL; measured from the kill to the second attempt's first instruction "
                      f"on b (`stamp`, through `sh`). {x.get('reps')} kills per round, a fresh schema each; figures "
                      f"are medians over rounds of each round's p50.", "",
                      "| kill → next attempt's first instruction | p50 | max |", "|---|---|---|",
                      f"| total | {cell(r, 'p50_ms', ' ms')[0]} | {cell(r, 'max_ms', ' ms')[0]} |",
                      f"| of which: kill → first attempt recorded `interrupted` (a declared dead, its run recovered by b) "
                      f"| {cell(r, 'recovered_p50_ms', ' ms')[0]} | {cell(r, 'recovered_max_ms', ' ms')[0]} |",
                      f"| then → second attempt started on b (the retry's backoff, the claim) | "
                      f"{cell(r, 'restart_p50_ms', ' ms')[0]} | - |",
                      f"| then → its first instruction (spawn) | {cell(r, 'spawn_p50_ms', ' ms')[0]} | - |", ""]
            orphans = [o for x in r for o in x.get("orphans", [])]
            if orphans:
                lines += [f"**The first attempt's process outlived its killed node** in {len(orphans)} kill(s).", ""]
            worst = max((x.get("recovered_max_ms") or 0) for x in r)
            bound = x.get("recovery_bound_ms")
            if bound:
                targets.append((f"W13 recovery within node_timeout + ⅓ of it ({fmt(bound / 1000, ' s')}, README)",
                                f"max {fmt(worst, ' ms')}", worst <= bound))
    if "W14" in res:
        r = res["W14"].get("postgres 1", [])
        if r:
            x = r[0]
            hb = ", ".join(f"`{k}`" for k in (x.get("heartbeat_kinds") or {}))
            lines += ["## W14 — an idle node on PostgreSQL: statements per minute", "",
                      f"One daemon, nothing queued, no schedules, `node_timeout` {x.get('node_timeout')}; after 3 s, "
                      f"{fmt(x.get('seconds'), ' s')} of the statements of its {x.get('connections')} connections: "
                      f"**{cell(r, 'statements_per_min')[0]} statements/min**: the heartbeat's transactions "
                      f"{cell(r, 'heartbeat_statements_per_min')[0]}/min" + (f" ({hb})" if hb else "") + ", everything else "
                      f"{cell(r, 'other_statements_per_min')[0]}/min in {cell(r, 'other_transactions_per_min')[0]} "
                      f"transactions/min; the daemon's CPU {cell(r, 'cpu_percent', ' %')[0]}.", "",
                      "Counted from the server's log: the daemon's URL sets `log_statement=all` for its own sessions "
                      "(`options=-c%20log_statement%3Dall`), and the lines of the server processes serving its "
                      "connections are read (`pg_stat_statements` needs `shared_preload_libraries`, i.e. a server "
                      "restart; `pg_stat_database` counts every client of the database, and transactions).", ""]
            kinds = x.get("other_kinds") or {}
            if kinds:
                lines += ["| statement beyond the heartbeat (first round; first 120 characters) | count |", "|---|---|"]
                lines += ["| `" + k.replace("|", "\\|") + f"` | {v} |" for k, v in kinds.items()]
                lines.append("")
            v = cell(r, "other_statements_per_min")[1]
            targets.append(("W14 an idle node sends nothing beyond its heartbeat", f"{fmt(v)} other statements/min",
                            v == 0))


def wkey(name):
    """Sort key of a workload name: W3 < W3b < W4 < W10."""
    m = re.match(r"W(\d+)([a-z]?)", name)
    return (int(m.group(1)), m.group(2))


def previous(path, res):
    """From the RESULTS.md at `path` (if any): the sections and target rows of workloads not in
    `res`, each section marked with the run it came from. None when there is nothing to keep."""
    if not path.exists():
        return None
    text = path.read_text()
    m = re.search(r"^- date: (.+?); worker commit `([0-9a-f]+)`", text, re.M)
    origin = f"*(kept from the run of {m.group(1)}, worker commit `{m.group(2)}`)*" if m else "*(kept from an earlier run)*"
    sections, cur, targets, in_targets = {}, None, [], False
    for line in text.splitlines():
        if line.startswith("## "):
            in_targets = line.startswith("## Targets")
            mm = re.match(r"## (W\d+[a-z]?) ", line)
            cur = wkey(mm.group(1)) if mm and mm.group(1) not in res else None
            if cur is not None:
                sections[cur] = [line, ""]
                continue
        if cur is not None:
            if not (line == "" and len(sections[cur]) == 2):
                sections[cur].append(line)
        elif in_targets and line.startswith("| W"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            mm = re.match(r"W\d+[a-z]?", cells[0])
            if mm and mm.group(0) not in res and len(cells) == 3:
                targets.append((cells[0], cells[1], cells[2]))
    if not sections:
        return None
    for n, sec in sections.items():
        if not any(x.startswith("*(kept from ") for x in sec):
            sec[2:2] = [origin, ""]
        while sec and sec[-1] == "":
            sec.pop()
        sec.append("")
    return {"sections": sections, "targets": targets, "plot": any(wkey(n) in sections for n in ("W3", "W4"))}


def plot_steps(res, path):
    """W9's per-step overhead distributions, when matplotlib is at hand."""
    venv_python = HERE / "peers" / ".venv" / "bin" / "python"
    series = {s: [x for r in rs for x in r.get("samples_ms", [])] for s, rs in res.get("W9", {}).items()}
    series = {s: xs for s, xs in series.items() if xs}
    if not series or not venv_python.exists():
        return None
    script = """
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
series, path = json.load(open(sys.argv[1])), sys.argv[2]
fig, ax = plt.subplots(figsize=(8, 4.5))
for name, xs in series.items():
    xs = sorted(xs)
    ax.plot(xs, [i / len(xs) for i in range(1, len(xs) + 1)], label=name)
ax.axvline(2, color="grey", linestyle=":", label="target p99 2 ms")
ax.set_xscale("log"); ax.set_title("W9 per-step overhead: step end -> next step's start (ms, log)")
ax.set_ylabel("fraction of gaps <= x"); ax.grid(alpha=.3); ax.legend()
fig.tight_layout(); fig.savefig(path, dpi=110)
"""
    data = Path(path).with_suffix(".json")
    data.write_text(json.dumps(series))
    r = subprocess.run([str(venv_python), "-c", script, str(data), str(path)], capture_output=True, text=True)
    data.unlink(missing_ok=True)
    return Path(path) if r.returncode == 0 else None


def plot(res, path):
    """Pickup latency (W3) and fire lag (W4) distributions, when matplotlib is at hand."""
    venv_python = HERE / "peers" / ".venv" / "bin" / "python"
    series = {}
    for name in ("W3", "W4"):
        for system, rs in res.get(name, {}).items():
            samples = [x for r in rs for x in r.get("samples_ms", [])]
            if samples:
                series[f"{name} {system}"] = samples
    if not series or not venv_python.exists():
        return None
    script = """
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
series, path = json.load(open(sys.argv[1])), sys.argv[2]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for ax, prefix, title in ((axes[0], "W3", "W3 pickup latency (ms, log)"), (axes[1], "W4", "W4 fire lag (ms)")):
    for name, xs in series.items():
        if name.startswith(prefix):
            xs = sorted(xs)
            ax.plot(xs, [i / len(xs) for i in range(1, len(xs) + 1)], label=name[3:])
    ax.set_title(title); ax.set_ylabel("fraction of samples ≤ x"); ax.grid(alpha=.3); ax.legend()
axes[0].set_xscale("log")
fig.tight_layout(); fig.savefig(path, dpi=110)
"""
    data = Path(path).with_suffix(".json")
    data.write_text(json.dumps(series))
    r = subprocess.run([str(venv_python), "-c", script, str(data), str(path)], capture_output=True, text=True)
    data.unlink(missing_ok=True)
    return Path(path) if r.returncode == 0 else None


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
