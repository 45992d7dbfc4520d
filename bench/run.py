"""`make bench`: official PyTorch CvT vs the cvt_tf inference paths and the peer runtimes, each in its own process.

Per model: write a synthetic official checkpoint, convert it (timed, peak RSS), convert to TFLite,
export the official model for the peers (ONNX, litert-torch), measure the fp32 matmul peak, then
alternate the systems' processes for several rounds.
"""

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.configs import (
    FULL,
    KERAS_BACKENDS,
    LITERT_TORCH,
    OPENVINO_EXPORT,
    PEERS,
    QUICK,
    SYSTEM_LABELS,
    SYSTEMS,
    TFLITE,
    worker_of,
)

REPO = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT_S = 1800


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one small config (cvt-13@112 b1), one round, 3 calls: checks every system runs (~4 min)")
    parser.add_argument("--rounds", type=int, help="alternation rounds (default 3; quick 1)")
    parser.add_argument("--calls", type=int, help="timed calls per process (default 10; quick 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads of every system (default 2)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}")
    parser.add_argument("--groups", help="comma-separated subset of e.g. cvt-13@224,cvt-21@384")
    parser.add_argument("--batches", help="comma-separated subset of each model's batch sizes, e.g. 1")
    parser.add_argument("--out", type=Path, default=REPO / "bench", help="directory of results.json and results.png")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.calls = args.calls or (3 if args.quick else 10)
    args.systems = [s for s in SYSTEMS if s in args.systems.split(",")]
    groups = QUICK if args.quick else FULL
    if args.groups:
        groups = [g for g in groups if g.name in args.groups.split(",")]
    if args.batches:
        wanted = {int(batch) for batch in args.batches.split(",")}
        groups = [dataclasses.replace(g, batches=tuple(b for b in g.batches if b in wanted)) for g in groups]
        groups = [g for g in groups if g.batches]
    args.group_list = groups
    return args


def run_process(command: list[str], log_path, env: dict) -> tuple[int, float, float]:
    """Runs one process to the end; returns (exit code, wall seconds, peak RSS in MB)."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > WORKER_TIMEOUT_S:
                process.kill()
            time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024


class Bench:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = Path(workdir)
        self.env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TF_CPP_MIN_LOG_LEVEL": "1",
                    "PYTHONPATH": str(REPO)}
        self.counter = 0

    def worker(self, framework: str, job: dict) -> tuple:
        """Runs bench.worker_<framework> on a job; returns (result dict or None, exit code, seconds, MB)."""
        self.counter += 1
        stem = self.workdir / f"{self.counter:03d}-{job['task']}-{job.get('system', '')}-{job['group']}"
        job = {**job, "result": f"{stem}.result.json", "workdir": str(self.workdir), "threads": self.args.threads}
        Path(f"{stem}.job.json").write_text(json.dumps(job))
        env = {**self.env, "KERAS_BACKEND": KERAS_BACKENDS.get(job.get("system"), "tensorflow")}
        code, seconds, rss = run_process(
            [sys.executable, "-m", f"bench.worker_{framework}", f"{stem}.job.json"], f"{stem}.log", env
        )
        result = json.loads(Path(job["result"]).read_text()) if code == 0 else None
        if code != 0:
            tail = Path(f"{stem}.log").read_text().strip().splitlines()[-3:]
            print(f"  ! {framework} {job['task']} {job.get('system', '')} {job['group']} exit {code}: {tail}")
        else:
            log = Path(f"{stem}.log").read_text()
            result["xnnpack_in_log"] = "XNNPACK" in log
        return result, code, seconds, rss

    def prepare(self, group) -> tuple[dict, dict]:
        """Synthetic checkpoint -> convert.py (timed) -> our TFLite and OpenVINO exports (timed) -> peer exports."""
        base = {"group": group.name, "variant": group.variant, "resolution": group.resolution, "round": 0,
                "seed": 0, "batches": list(group.batches), "calls": self.args.calls}
        checkpoint = self.workdir / f"{group.name}.pth"
        self.worker("torch", {**base, "task": "checkpoint", "checkpoint": str(checkpoint)})
        name = group.name.replace("@", "-")
        command = [sys.executable, "convert.py", "--config", group.variant, "--res", str(group.resolution),
                   "--checkpoint", str(checkpoint), "--out", str(self.workdir), "--name", name]
        code, seconds, rss = run_process(command, self.workdir / f"convert-{name}.log", self.env)
        conversion = {"command": " ".join(command[1:]), "exit_code": code, "seconds": seconds, "peak_rss_mb": rss,
                      "checkpoint_mb": checkpoint.stat().st_size / 2**20}
        print(f"  converted {group.name}: {seconds:.1f} s, peak RSS {rss:.0f} MB (exit {code})")
        base["checkpoint"] = str(checkpoint)
        base["artifact"] = str(self.workdir / f"{name}.weights.h5")
        if TFLITE in self.args.systems:
            result, code, seconds, rss = self.worker("tf", {**base, "task": "tflite"})
            conversion["tflite"] = {"exit_code": code, "seconds": seconds, "peak_rss_mb": rss,
                                    **({"convert_s": result["convert_s"], "bytes": result["bytes"]} if result else {})}
            print(f"  TFLite {group.name}: {seconds:.1f} s, peak RSS {rss:.0f} MB (exit {code})")
        if OPENVINO_EXPORT in self.args.systems:
            result, code, seconds, rss = self.worker("tf", {**base, "task": "openvino"})
            conversion["openvino"] = {"exit_code": code, "seconds": seconds, "peak_rss_mb": rss,
                                      **({"convert_s": result["convert_s"]} if result else {})}
            print(f"  OpenVINO IR {group.name}: {seconds:.1f} s, peak RSS {rss:.0f} MB (exit {code})")
        if any(system in self.args.systems for system in PEERS):
            result, code, seconds, rss = self.worker("torch", {**base, "task": "peers"})
            conversion["peers"] = {"exit_code": code, "seconds": seconds, "peak_rss_mb": rss,
                                   **({"export_s": result["export_s"]} if result else {})}
            print(f"  ONNX + litert-torch exports {group.name}: {seconds:.1f} s, peak RSS {rss:.0f} MB (exit {code})")
        return base, conversion

    def run_group(self, group) -> tuple[list, dict]:
        print(f"== {group.name}, batches {list(group.batches)}")
        base, conversion = self.prepare(group)
        peak, *_ = self.worker("tf", {**base, "task": "matmul"})
        results = {s: [] for s in self.args.systems}
        for round_index in range(self.args.rounds):
            for system in results:
                result, *_ = self.worker(worker_of(system),
                                         {**base, "task": "time", "system": system, "round": round_index})
                if result is not None:
                    results[system].append(result)
                    medians = ", ".join(
                        f"b{b['batch']} {1e3 * sorted(b['times_s'])[len(b['times_s']) // 2]:.1f} ms"
                        for b in result["batches"]
                    )
                    print(f"  round {round_index} {system:<17} {medians}  load {os.getloadavg()[0]:.1f}")
        failed = sorted(s for s, r in results.items() if len(r) < self.args.rounds)
        results = {s: r for s, r in results.items() if s not in failed}
        peak_gflops = peak["gflops"] if peak else None
        rows = [row for batch in group.batches for row in report.rows(group, batch, results, peak_gflops)]
        threads = {s: r[0]["threads"] for s, r in results.items()}
        xnnpack = {s: results[s][0]["xnnpack_in_log"] for s in (TFLITE, LITERT_TORCH) if s in results}
        return rows, {"conversion": conversion, "matmul_peak": peak, "threads": threads, "xnnpack_in_log": xnnpack,
                      "failed": failed}


def machine() -> dict:
    import numpy

    return {"platform": platform.platform(), "python": platform.python_version(), "numpy": numpy.__version__,
            "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg()}


def write_results(args, info: dict, groups: dict, all_rows: list, skipped: dict, started: float) -> dict:
    """Writes results.json (after every model, so a long run that is stopped keeps what it measured)."""
    info["loadavg_end"] = os.getloadavg()
    for row in all_rows:
        row.pop("logits", None)
    results = {
        "machine": info, "threads": args.threads, "rounds": args.rounds, "calls": args.calls,
        "quick": args.quick, "systems": {s: SYSTEM_LABELS[s] for s in args.systems}, "groups": groups,
        "rows": all_rows, "skipped": [{"config": c, "system": s, "reason": r} for (c, s), r in skipped.items()],
        "wall_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    info = machine()
    print(f"bench: {len(args.group_list)} models, systems {args.systems}, {args.rounds} rounds x {args.calls} "
          f"calls, {args.threads} threads per system (torch.set_num_threads; tf-function and tf-live intra-op 1 / "
          f"inter-op {args.threads} with {args.threads} streams; eager and XLA intra-op {args.threads} / inter-op "
          f"{args.threads}; habit paths TensorFlow's defaults; LiteRT num_threads {args.threads}; ONNX Runtime "
          f"intra-op {args.threads}; OpenVINO {args.threads} threads, f32); load {info['loadavg_start']}")
    all_rows, groups, skipped = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="cvt-bench-") as workdir:
        bench = Bench(args, workdir)
        for group in args.group_list:
            rows, details = bench.run_group(group)
            all_rows.extend(rows)
            groups[group.name] = details
            for system in details["failed"]:
                for batch in group.batches:
                    skipped[(f"{group.name} b{batch}", system)] = "FAILED: a worker exited with an error"
            results = write_results(args, info, groups, all_rows, skipped, started)
    text = report.table(all_rows, skipped)
    print(text)
    if not all_rows:
        raise SystemExit("bench: no system completed")
    try:
        report.chart(all_rows, args.out / "results.png")
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): no chart written")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.png'} in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
