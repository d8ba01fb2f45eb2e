#!/usr/bin/env python3
"""Writes bench/RESULTS.md from the raw results of bench/run (bench/work/results.json).

    bench/report.py bench/work/results.json bench/RESULTS.md

Medians over rounds with min-max, ratios against the bare spawn limit and each peer measured in
the same run, and the targets of the benchmark issue, each marked met or not. A PNG of the latency
distributions is drawn when matplotlib is available (bench/peers/.venv has it after setup).
"""

import json
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
        lines += ["## W3 — pickup latency: enqueue on an idle daemon → the job's first instruction", "",
                  "| system | p50 | p99 | worker p99 vs it |", "|---|---|---|---|"]
        wk = cell(r["worker"], "p99_ms")[1]
        for s, rs in r.items():
            lines.append(f"| {s} | {cell(rs, 'p50_ms', ' ms')[0]} | {cell(rs, 'p99_ms', ' ms')[0]} | "
                         f"{'-' if s == 'worker' else ratio(wk, cell(rs, 'p99_ms')[1], False)} |")
        lines += ["", "worker's enqueue is a `worker queue:add` process (start-up, configuration, one fsync'd "
                  "commit, wake-up datagram); the peers' are a library call in a running client, except pueue's "
                  "`pueue add`.", ""]
        targets.append(("W3 p99 ≤ 50 ms", fmt(wk, " ms"), wk <= 50))
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

    lines[len(lines):] = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, got, ok in targets:
        lines.append(f"| {name} | {got} | {'yes' if ok else '**no**'} |")
    lines.append("")

    png = plot(res, Path(out).with_name("latency.png"))
    if png:
        lines += ["## Distributions", "", f"![pickup latency and fire lag]({png.name})", ""]
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    Path(out).write_text("\n".join(lines))


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
