"""Fine-tuning on tf.distribute gives the weights of one device: mirrored over 2 logical CPUs, two workers on
loopback, and after a kill.

Each distributed run is `convert.py finetune` in processes of its own (tests/finetune_run.py: logical devices
and collectives must be set before TensorFlow starts; no PyTorch, as the runtime install), on the same global
batches as the one-device run in this process: a tiny SPEC, fixed seeds, dropout and stochastic depth 0.

Tolerance: 1e-5 on every variable. The replicas see the same images, BatchNorm is synchronized, and the only
difference is the order of float32 sums (per-replica gradients all-reduced, within a process or over gRPC
between workers, batch moments summed over replicas): ~1e-7 relative per step. AdamW divides the gradient by
its running RMS, so a rounding difference of a gradient near zero can move a weight by up to ~lr per step; 9
steps at lr 1e-3 stay far below 1e-5 unless that happens (4.8e-7 measured, mirrored and multi-worker alike),
while a replica reading another batch moves weights by the size of a whole update (~lr = 1e-3).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, TINY_SPEC
from tests.finetune_data import image_set, max_weight_diff, stored_weights, tiny_artifact

# TINY_SPEC's first stage alone, with a cls token: one block with dw_bn projections (BatchNorm to
# synchronize), and a train step a distributed trace can build in seconds (TINY_SPEC's takes ~40 s mirrored).
ONE_STAGE_SPEC = {**{key: value[:1] for key, value in TINY_SPEC.items() if isinstance(value, list)},
                  "NUM_STAGES": 1, "CLS_TOKEN": [True]}
TOLERANCE = 1e-5
SETTINGS = ["--num-classes", 5, "--epochs", 3, "--batch", 8, "--lr", 1e-3, "--seed", 3, "--name", "ft"]
RUN_TIMEOUT = 240  # seconds a run may take before the test kills it and fails


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    return {"root": root, "artifact": tiny_artifact(root / "artifacts", ONE_STAGE_SPEC),
            "data": image_set(root / "data", per_class=8)}  # 6 train + 2 validation per class: 3 steps per epoch


@pytest.fixture(scope="module")
def one_device(setup):
    """{name: array} after the one-device run in this process."""
    from converter.finetune import FineTuneJob, run_finetune

    values = dict(zip(SETTINGS[::2], SETTINGS[1::2], strict=True))
    job = FineTuneJob(data=setup["data"], artifact=setup["artifact"], num_classes=values["--num-classes"],
                      out=setup["root"] / "one", epochs=values["--epochs"], batch=values["--batch"],
                      learning_rate=values["--lr"], seed=values["--seed"], name=values["--name"], strategy="one",
                      verbose=0)
    result = run_finetune(job, progress=lambda _: None)
    return stored_weights(result.weights_path.with_name("ft"))


def _command(setup, out, strategy, cpus=1, resume=False):
    args = ["finetune", setup["data"], "--artifact", setup["artifact"], "--out", out, "--strategy", strategy,
            *SETTINGS, *(["--resume"] if resume else [])]
    return [sys.executable, str(REPO / "tests" / "finetune_run.py"), "--logical-cpus", str(cpus), *map(str, args)]


def _environment(tf_config=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _manifest(out):
    return json.loads((out / "ft.json").read_text())


def test_mirrored_over_two_logical_cpus_gives_the_one_device_weights(setup, one_device):
    out = setup["root"] / "mirrored"
    result = subprocess.run(_command(setup, out, "mirrored", cpus=2), env=_environment(), cwd=REPO,
                            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stdout[-800:] + result.stderr[-800:]
    assert (_manifest(out)["fine_tuning"]["strategy"], _manifest(out)["fine_tuning"]["replicas"]) == ("mirrored", 2)
    diff = max_weight_diff(stored_weights(out / "ft"), one_device)
    print(f"mirrored (2 logical CPUs) vs one device: max abs weight diff {diff:.2e}")
    assert diff <= TOLERANCE


def _checkpointed_epochs(out):
    try:
        return json.loads((out / "checkpoint.json").read_text())["epochs_done"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.mark.slow
def test_a_run_killed_mid_epoch_then_resumed_gives_the_uninterrupted_weights(setup, one_device):
    """A mirrored run (2 logical CPUs) is SIGKILLed once epoch 1 is checkpointed, then rerun with --resume."""
    out = setup["root"] / "killed"
    run = subprocess.Popen(_command(setup, out, "mirrored", cpus=2), cwd=REPO, env=_environment(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while _checkpointed_epochs(out) < 1:
            assert time.monotonic() < deadline and run.poll() is None, "no epoch checkpointed"
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
    finally:
        if run.poll() is None:
            run.kill()
        run.wait(timeout=30)
    killed_after = _checkpointed_epochs(out)
    assert run.returncode == -signal.SIGKILL
    assert 1 <= killed_after < 3 and not (out / "ft.json").exists()  # killed before the run's end
    resumed = subprocess.run(_command(setup, out, "mirrored", cpus=2, resume=True), env=_environment(), cwd=REPO,
                             capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert resumed.returncode == 0, resumed.stdout[-800:] + resumed.stderr[-800:]
    assert f"resuming after epoch {killed_after} of 3" in resumed.stdout
    assert [row["epoch"] for row in json.loads((out / "history.json").read_text())] == [1, 2, 3]
    diff = max_weight_diff(stored_weights(out / "ft"), one_device)
    print(f"mirrored, killed after epoch {killed_after} and resumed, vs one device: max abs weight diff {diff:.2e}")
    assert diff <= TOLERANCE


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _start_workers(setup, out, logs, resume=False):
    """Both workers of a 2-worker MultiWorkerMirroredStrategy on 127.0.0.1, each with its TF_CONFIG."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        with open(logs / f"worker{index}{'-resumed' if resume else ''}.log", "w") as log:
            workers.append(subprocess.Popen(_command(setup, out, "multi-worker", resume=resume), cwd=REPO,
                                            env=_environment(tf_config), stdout=log, stderr=subprocess.STDOUT))
    return workers


def _stop(workers):
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
    for worker in workers:
        worker.wait(timeout=30)


def _wait(workers, logs, until=None):
    """Waits for both workers to exit (or for `until()`), killing both and failing after RUN_TIMEOUT."""
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while any(worker.poll() is None for worker in workers) and not (until and until()):
            if time.monotonic() > deadline or (until and any(worker.poll() is not None for worker in workers)):
                output = "\n".join(path.read_text()[-600:] for path in sorted(logs.glob("worker*.log")))
                pytest.fail(f"the workers did not {'reach the kill point' if until else 'finish'} in time:\n{output}")
            time.sleep(0.05)
    finally:
        if until is None:
            _stop(workers)


def _worker_output(logs, index, resume=False):
    return (logs / f"worker{index}{'-resumed' if resume else ''}.log").read_text()


@pytest.mark.slow
def test_two_workers_on_loopback_give_the_one_device_weights(setup, one_device, tmp_path):
    out = setup["root"] / "multi-worker"
    workers = _start_workers(setup, out, tmp_path)
    _wait(workers, tmp_path)
    assert [worker.returncode for worker in workers] == [0, 0], _worker_output(tmp_path, 0)[-800:] + \
        _worker_output(tmp_path, 1)[-800:]
    assert (_manifest(out)["fine_tuning"]["strategy"], _manifest(out)["fine_tuning"]["replicas"]) == \
        ("multi-worker", 2)
    assert "multi-worker strategy, 2 replica(s)" in _worker_output(tmp_path, 1)
    assert "wrote " not in _worker_output(tmp_path, 1)  # only the chief writes RUN_DIR
    diff = max_weight_diff(stored_weights(out / "ft"), one_device)
    print(f"multi-worker (2 processes on loopback) vs one device: max abs weight diff {diff:.2e}")
    assert diff <= TOLERANCE


@pytest.mark.slow
def test_a_worker_killed_mid_run_then_both_resumed_give_the_uninterrupted_weights(setup, one_device, tmp_path):
    """Worker 1 is SIGKILLed once the chief checkpointed epoch 1 (the chief, stuck in its collective, is killed
    too, as a cluster manager would); both rerun with --resume and read the chief's checkpoint in RUN_DIR."""
    out = setup["root"] / "multi-worker-killed"
    workers = _start_workers(setup, out, tmp_path)
    try:
        _wait(workers, tmp_path, until=lambda: _checkpointed_epochs(out) >= 1)
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait(timeout=30)
    finally:
        _stop(workers)
    killed_after = _checkpointed_epochs(out)
    assert workers[1].returncode == -signal.SIGKILL
    assert 1 <= killed_after < 3 and not (out / "ft.json").exists()  # killed before the run's end
    resumed = _start_workers(setup, out, tmp_path, resume=True)
    _wait(resumed, tmp_path)
    outputs = [_worker_output(tmp_path, index, resume=True) for index in range(2)]
    assert [worker.returncode for worker in resumed] == [0, 0], outputs[0][-800:] + outputs[1][-800:]
    assert all(f"resuming after epoch {killed_after} of 3" in output for output in outputs)
    assert [row["epoch"] for row in json.loads((out / "history.json").read_text())] == [1, 2, 3]
    diff = max_weight_diff(stored_weights(out / "ft"), one_device)
    print(f"multi-worker, worker 1 killed after epoch {killed_after} and both resumed, vs one device: "
          f"max abs weight diff {diff:.2e}")
    assert diff <= TOLERANCE
