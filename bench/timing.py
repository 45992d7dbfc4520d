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

WARMUP_CALLS = 3  # after the first call, which is timed on its own; oneDNN and XNNPack settle by then


def read_job() -> dict:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.worker_<framework> JOB.json")
    return json.loads(Path(sys.argv[1]).read_text())


def write_result(job: dict, result: dict) -> None:
    result = {"system": job.get("system"), "group": job["group"], "round": job["round"], "pid": os.getpid(), **result}
    Path(job["result"]).write_text(json.dumps(result, indent=1))


def time_calls(run, calls: int) -> tuple:
    """(first call s, logits of the first call, [wall s of each timed call], [CPU s of each]).

    CPU seconds (all threads of the process) are what the call cost when other work shares the cores.

    `WARMUP_CALLS` calls between the first and the timed ones are not recorded.
    """
    started = time.perf_counter()
    logits = run()
    first = time.perf_counter() - started
    for _ in range(WARMUP_CALLS):
        run()
    times, cpu_times = [], []
    for _ in range(calls):
        started, cpu_started = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    return first, logits, times, cpu_times


def time_batches(job: dict, make_run, threads: dict) -> None:
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
        first, logits, times, cpu_times = time_calls(run, job["calls"])
        entry = {"batch": batch, "first_call_s": setup + first, "times_s": times, "cpu_times_s": cpu_times,
                 "loadavg": os.getloadavg()}
        if job["round"] == 0:
            path = Path(job["workdir"]) / f"logits-{job['system']}-{job['group']}-b{batch}.npy"
            np.save(path, np.asarray(logits, np.float32))
            entry["logits"] = str(path)
        batches.append(entry)
    write_result(job, {"threads": threads, "batches": batches})
