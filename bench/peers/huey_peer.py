"""huey peer for bench/peers/drive (runs under bench/peers/.venv/bin/python).

    huey_peer.py worker C [--gate] [--expect N]   the consumer: `huey_consumer -w C -k thread -q`
    huey_peer.py client                           enqueues on request, one JSON line per request

Storage is SqliteHuey on the file $HUEY_DB. Two tasks: `run` runs its argv with subprocess.run
(w1, w3); `get` makes one HTTP GET and requires status 200 (w8; http_get.py).

worker: builds the consumer exactly as the huey_consumer script does (ConsumerConfig, logger,
create_consumer) and prints "ready". With --gate it then waits for one line on stdin before
consumer.run(), so jobs can be enqueued with no consumer running and the drain timed from "go".
With --expect N it counts SIGNAL_COMPLETE/SIGNAL_ERROR (all workers are threads of this one
process) and, at the Nth, prints {"done_mono": CLOCK_MONOTONIC ns, "ok", "errors", "pending"}.

client: reads JSON requests from stdin, answers each with one JSON line:
    {"cmd": "enqueue", "n": N, "argv": [...]}  -> {"seconds": time to enqueue N tasks one by one}
    {"cmd": "enqueue", "n": N, "url": URL}     -> the same with N `get` tasks
    {"cmd": "add", "argv": [...]}              -> {"t0_mono": CLOCK_MONOTONIC ns just before the call}
"""
import json
import logging
import os
import subprocess
import sys
import threading
import time

from huey import SqliteHuey, signals

import http_get

huey = SqliteHuey("bench", filename=os.environ["HUEY_DB"])


@huey.task()
def run(argv):
    subprocess.run(argv, check=True)


@huey.task()
def get(url):
    http_get.get(url)


def worker(workers, gate, expect):
    from huey.consumer_options import ConsumerConfig

    # Same as `huey_consumer bench.huey -w C -k thread -q`; -q (WARNING) rather than the default
    # INFO, which logs two lines per task; celery's worker also defaults to WARNING.
    config = ConsumerConfig(workers=workers, worker_type="thread", verbose=False)
    config.validate()
    config.setup_logger(logging.getLogger("huey"))
    consumer = huey.create_consumer(**config.values)

    if expect:
        lock = threading.Lock()
        counts = {signals.SIGNAL_COMPLETE: 0, signals.SIGNAL_ERROR: 0}

        @huey.signal(signals.SIGNAL_COMPLETE, signals.SIGNAL_ERROR)
        def count(signal, task, *args, **kwargs):
            with lock:
                counts[signal] += 1
                if sum(counts.values()) == expect:
                    t = time.monotonic_ns()
                    print(json.dumps({"done_mono": t, "ok": counts[signals.SIGNAL_COMPLETE],
                                      "errors": counts[signals.SIGNAL_ERROR],
                                      "pending": huey.pending_count()}), flush=True)

    print("ready", flush=True)
    if gate:
        sys.stdin.readline()
    consumer.run()


def client():
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "enqueue":
            t = time.monotonic()
            if "url" in req:
                for _ in range(req["n"]):
                    get(req["url"])
            else:
                for _ in range(req["n"]):
                    run(req["argv"])
            reply = {"seconds": time.monotonic() - t}
        elif req["cmd"] == "add":
            t0 = time.monotonic_ns()
            run(req["argv"])
            reply = {"t0_mono": t0}
        else:
            reply = {"error": f"unknown cmd {req['cmd']}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        a = sys.argv[2:]
        worker(int(a[0]), "--gate" in a, int(a[a.index("--expect") + 1]) if "--expect" in a else 0)
    elif sys.argv[1] == "client":
        client()
    else:
        sys.exit(__doc__)
