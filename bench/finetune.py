"""Fine-tuning throughput: images/s of train steps for one device vs MirroredStrategy over 2 logical CPUs.

    python bench/finetune.py                       # both, each in its own process: cvt-13 @ 224, batch 16
    python bench/finetune.py --res 48 --steps 2    # a quick check that it runs

Times the train step `convert.py finetune` runs (cvt_tf.finetune_loop.TrainStep: synchronized BatchNorm, AdamW), on
in-memory random images, so the figure is the model's, not the image decoding's. Run on a quiet machine.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def measure(devices: int, configuration: str, resolution: int, batch: int, steps: int) -> dict:
    import tensorflow as tf

    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    import numpy as np

    from cvt_tf import CvT
    from cvt_tf.finetune import compile_for_finetuning, local_devices
    from cvt_tf.finetune_loop import TrainStep

    strategy = tf.distribute.MirroredStrategy(local_devices()) if devices > 1 else tf.distribute.OneDeviceStrategy(
        local_devices()[0])
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, resolution, resolution, 3), dtype=np.float32)
    labels = rng.integers(0, 5, batch).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(batch)  # split by the strategy
    with strategy.scope():
        model = CvT(configuration=configuration, num_classes=5, synchronized_batch_norm=True).build_for_any_size()
        compile_for_finetuning(model, 1e-4, total_steps=1000)
    step, batches = TrainStep(strategy, model, batch), iter(strategy.experimental_distribute_dataset(dataset))
    for _ in range(2):  # trace and warm up
        step(next(batches))
    started = time.perf_counter()
    for _ in range(steps):
        step(next(batches))
    seconds = time.perf_counter() - started
    return {"strategy": "mirrored" if devices > 1 else "one", "devices": devices, "configuration": configuration,
            "resolution": resolution, "batch": batch, "steps": steps, "images_per_second": batch * steps / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, help="Run one measurement in this process (1 or 2 devices).")
    parser.add_argument("--config", default="cvt-13")
    parser.add_argument("--res", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16, help="Global batch (split over the devices).")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if args.devices is not None:
        print(json.dumps(measure(args.devices, args.config, args.res, args.batch, args.steps)))
        return
    for devices in (1, 2):
        command = [sys.executable, __file__, "--devices", str(devices), "--config", args.config, "--res",
                   str(args.res), "--batch", str(args.batch), "--steps", str(args.steps)]
        result = subprocess.run(command, capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parents[1])
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{row['configuration']} @ {row['resolution']}, batch {row['batch']}, {row['strategy']} over "
              f"{row['devices']} device(s): {row['images_per_second']:.1f} images/s")


if __name__ == "__main__":
    main()
