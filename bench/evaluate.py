"""`make bench-evaluate`: evaluate's images/s against the bench's default path, same config and batch, one run.

A synthetic artifact, a generated JPEG set at photo sizes, then alternated rounds of (a) the whole
evaluate pipeline (decode + transform in threads, the model, the per-image CSV) and (b) the model alone
(`cvt_tf.inference_function`, streams, on a fixed batch), as `make bench` times tf-function.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import converter  # noqa: F401  (torch before TensorFlow; the synthetic artifact is converted here)
from converter.pipeline import Conversion, convert
from cvt_spec import variant_spec

SIZES = ((375, 500), (500, 375), (333, 500), (480, 640), (427, 640))  # ImageNet-like photo sizes


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cvt-13", help="variant (default cvt-13)")
    parser.add_argument("--res", type=int, default=224, help="resolution (default 224)")
    parser.add_argument("--batch", type=int, default=16, help="batch of both paths (default 16, evaluate's)")
    parser.add_argument("--images", type=int, default=128, help="generated images per evaluate round (default 128)")
    parser.add_argument("--rounds", type=int, default=3, help="alternation rounds (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="cores, as make bench (default 2)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    return parser.parse_args(argv)


def generate_images(folder: Path, count: int) -> None:
    """`count` seeded JPEGs (smooth noise, photo-like sizes) in an ImageNet-V2 class folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "0").mkdir(parents=True)
    for index in range(count):
        height, width = SIZES[index % len(SIZES)]
        coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR).save(
            folder / "0" / f"{index:05d}.jpg", quality=90)


def main(argv=None) -> None:
    args = parse_args(argv)
    import cvt_tf

    cvt_tf.set_cpu_threads(args.threads)
    import tensorflow as tf

    from cvt_tf.datasets import read_image_set
    from cvt_tf.evaluation import evaluate, keras_classifier
    from cvt_tf.evaluation_log import ResultsLog
    from cvt_tf.preprocessing import EvalTransform

    work = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    name = f"{args.config}-{args.res}"
    convert(Conversion(spec=variant_spec(args.config), num_classes=1000, resolution=(args.res, args.res), name=name,
                       out_dir=work, parity=False), progress=lambda _: None)
    generate_images(work / "data", args.images)
    image_set = read_image_set(work / "data")
    transform = EvalTransform.official(args.res)
    model = cvt_tf.load_artifact(work / name)
    keras = keras_classifier(model, args.batch, transform)
    function = cvt_tf.inference_function(model, (args.batch, args.res, args.res, 3))
    inputs = tf.constant(np.random.default_rng(0).standard_normal((args.batch, args.res, args.res, 3), np.float32))
    model_calls = max(1, args.images // args.batch)
    for _ in range(3):  # warm-up of both paths
        function(inputs).numpy()
    keras(np.zeros((args.batch, args.res, args.res, 3), np.float32))
    rows = []
    for round_number in range(args.rounds):
        log = ResultsLog(work / f"round{round_number}.csv", {"round": round_number}, resume=False)
        started = time.perf_counter()
        evaluate(image_set, keras, transform, args.batch, log)
        pipeline = len(image_set) / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(model_calls):
            function(inputs).numpy()
        alone = model_calls * args.batch / (time.perf_counter() - started)
        rows.append({"round": round_number, "evaluate_images_per_s": pipeline, "model_images_per_s": alone})
        print(f"round {round_number}: evaluate {pipeline:.2f} images/s, inference_function alone {alone:.2f} "
              f"images/s ({pipeline / alone:.1%})", flush=True)
    best_pipeline = max(r["evaluate_images_per_s"] for r in rows)
    best_model = max(r["model_images_per_s"] for r in rows)
    print(f"{args.config} @ {args.res}, batch {args.batch}, {args.threads} threads, {len(image_set)} JPEGs: "
          f"evaluate {best_pipeline:.2f} images/s, model alone {best_model:.2f} images/s; the pipeline costs "
          f"{1 - best_pipeline / best_model:.1%} of the model's speed (best of {args.rounds} rounds)")
    if args.out:
        args.out.write_text(json.dumps({"config": args.config, "resolution": args.res, "batch": args.batch,
                                        "threads": args.threads, "images": len(image_set), "rounds": rows,
                                        "pid": os.getpid()}, indent=1))


if __name__ == "__main__":
    main()
