"""celery peer for bench/peers/drive (runs under bench/peers/.venv/bin/python).

The app module for `celery -A celery_peer worker ...` (started by drive, cwd = bench/peers), and

    celery_peer.py client    enqueues on request, one JSON line per request

Broker $CELERY_BROKER_URL (Redis db 0), result backend $CELERY_RESULT_BACKEND (Redis db 1, which
holds nothing but results, so its key count is the number of finished tasks). Two tasks: `run`
runs its argv with subprocess.run (w1, w3); `get` makes one HTTP GET and requires status 200
(w8; http_get.py). Settings are Celery's defaults except the default queue name and
broker_connection_retry_on_startup (which only silences a deprecation warning).

When $CELERY_READY_FILE is set, the worker writes CLOCK_REALTIME ns into that file (atomically)
on the worker_ready signal, which celery sends right after the consumer starts consuming.

client requests (JSON lines on stdin; one JSON line answers each):
    {"cmd": "enqueue", "n": N, "argv": [...]}  -> {"seconds": time to enqueue N tasks one by one}
    {"cmd": "enqueue", "n": N, "url": URL}     -> the same with N `get` tasks
    {"cmd": "add", "argv": [...]}              -> {"t0_mono": CLOCK_MONOTONIC ns just before the call}
    {"cmd": "wait", "n": N}                    -> waits (polling the result db's DBSIZE every 10 ms)
        until N results exist, then reads them all: {"ok", "failures", "last_done_real": the
        latest date_done in ns (the worker's own completion record), "seen_real": ns}
"""
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

from celery import Celery, signals

import http_get

app = Celery("celery_peer", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(task_default_queue="bench", broker_connection_retry_on_startup=True)


@app.task(name="run")
def run(argv):
    subprocess.run(argv, check=True)


@app.task(name="get")
def get(url):
    http_get.get(url)


@signals.worker_ready.connect
def _ready(**_):
    # Sent right after the consumer starts consuming, just before the event loop's first turn.
    path = os.environ.get("CELERY_READY_FILE")
    if path:
        t = time.time_ns()
        with open(path + ".tmp", "w") as f:
            f.write(str(t))
        os.rename(path + ".tmp", path)


def _ns(iso):
    d = datetime.fromisoformat(iso)
    if d.tzinfo is None:  # celery writes UTC
        d = d.replace(tzinfo=timezone.utc)
    return int(d.timestamp()) * 10**9 + d.microsecond * 1000


def _wait(n, timeout=3600):
    r = app.backend.client
    deadline = time.monotonic() + timeout
    while r.dbsize() < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {r.dbsize()} of {n} results after {timeout} s")
        time.sleep(0.01)
    seen = time.time_ns()
    keys = list(r.scan_iter("celery-task-meta-*", count=1000))
    metas = [json.loads(m) for i in range(0, len(keys), 1000) for m in r.mget(keys[i:i + 1000])]
    ok = sum(m["status"] == "SUCCESS" for m in metas)
    return {"ok": ok, "failures": len(metas) - ok, "seen_real": seen,
            "last_done_real": max(_ns(m["date_done"]) for m in metas)}


def client():
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "enqueue":
            t = time.monotonic()
            if "url" in req:
                for _ in range(req["n"]):
                    get.delay(req["url"])
            else:
                for _ in range(req["n"]):
                    run.delay(req["argv"])
            reply = {"seconds": time.monotonic() - t}
        elif req["cmd"] == "add":
            t0 = time.monotonic_ns()
            run.delay(req["argv"])
            reply = {"t0_mono": t0}
        elif req["cmd"] == "wait":
            reply = _wait(req["n"])
        else:
            reply = {"error": f"unknown cmd {req['cmd']}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["client"]:
        client()
    else:
        sys.exit(__doc__)
