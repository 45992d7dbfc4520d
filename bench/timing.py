"""The timing loop and the job/result files shared by the worker processes.

A worker reads one JSON job, times one system on one model per batch size, and writes one JSON result.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.configs import bench_inputs

WARMUP_CALLS = 2  # after the first call, which is timed on its own


def read_job():
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.worker_<framework> JOB.json")
    return json.loads(Path(sys.argv[1]).read_text())


def write_result(job, result):
    result = {"system": job.get("system"), "group": job["group"], "round": job["round"], "pid": os.getpid(), **result}
    Path(job["result"]).write_text(json.dumps(result, indent=1))


def time_calls(run, calls):
    """(first call seconds, logits of the first call, [seconds of each timed call]).

    `WARMUP_CALLS` calls between the first and the timed ones are not recorded.
    """
    started = time.perf_counter()
    logits = run()
    first = time.perf_counter() - started
    for _ in range(WARMUP_CALLS):
        run()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return first, logits, times


def time_batches(job, make_run, threads):
    """Times `make_run(batch, nchw_inputs) -> run` for each batch size of the job; writes the result.

    `run()` does one whole inference and returns the logits as numpy. The time `make_run` takes
    (tracing set-up, interpreter creation) counts towards the first call.
    """
    batches = []
    for batch in job["batches"]:
        inputs = bench_inputs(batch, job["resolution"], job["seed"])
        started = time.perf_counter()
        run = make_run(batch, inputs)
        setup = time.perf_counter() - started
        first, logits, times = time_calls(run, job["calls"])
        entry = {"batch": batch, "first_call_s": setup + first, "times_s": times, "loadavg": os.getloadavg()}
        if job["round"] == 0:
            path = Path(job["workdir"]) / f"logits-{job['system']}-{job['group']}-b{batch}.npy"
            np.save(path, np.asarray(logits, np.float32))
            entry["logits"] = str(path)
        batches.append(entry)
    write_result(job, {"threads": threads, "batches": batches})
