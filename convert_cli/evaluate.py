
"""`convert.py evaluate DATA --artifact A`: top-1 and top-5 on a labelled image set, beside the PyTorch reference.

Options in, the report out; the work is cvt_tf.evaluation's (Keras) and official_ref's (with --checkpoint).
"""

import json
import os
import shlex
import sys
import time
from pathlib import Path

import click

from convert_cli.errors import BadInput
from convert_cli.inputs import check_checkpoint_file, require_pytorch
from cvt_spec import ArtifactError
from cvt_spec.artifacts import file_sha256, read_manifest
from cvt_spec.atomic import write_text_file, writing
from cvt_spec.checkpoints import official_of_artifact

HELP = """Top-1 and top-5 of an artifact on the labelled images in DATA, with the official evaluation transform.

\b
  python convert.py evaluate imagenetv2-matched-frequency --artifact artifacts/cvt-21-384x384_1k \\
      --checkpoint checkpoints/CvT-21-384x384-IN-1k.pth --json cvt-21-384.json

\b
Layouts: imagenet-v2 (class folders 0 ... 999, the class is int(name)), imagefolder (WordNet id
folders n01440764 ...), labels (--labels CSV of relative/path,class); auto picks one and says why.
Per-image results go to OUT.csv beside --json (else NAME-evaluate.csv), appended as they are computed;
--resume continues an interrupted run from it. Exit codes: 0 ok, 2 bad input, 130 interrupted.
"""

PLAIN_PROGRESS_SECONDS = 10.0


def results_path(json_path: str | None, name: str) -> Path:
    return Path(json_path).with_suffix(".csv") if json_path else Path(f"{name}-evaluate.csv")


def resume_command(options: dict) -> str:
    """The command line that continues this run."""
    words = ["convert.py", "evaluate", options["data"], "--artifact", options["artifact"]]
    for option in ("checkpoint", "layout", "labels", "batch", "limit", "json"):
        if options[option] is not None:
            words += [f"--{option}", str(options[option])]
    return shlex.join(words + ["--strict"] * options["strict"] + ["--resume"])


def reference_classifier(manifest: dict, checkpoint: str):
    """(official_ref on (n, H, W, 3) batches -> logits, one-line note on the checkpoint)."""
    import numpy as np
    import torch

    from convert_cli.predict import official_reference

    model, note = official_reference(manifest, checkpoint)

    def classify(images):
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).numpy()

    return classify, note


def write_json(path: Path, data: dict) -> None:
    """`data` as JSON at `path`, written whole (staged, then renamed into place)."""
    with writing(path) as staged:
        write_text_file(staged, json.dumps(data, indent=1) + "\n")


def use_all_cores() -> str:
    """The bench's default threading (`cvt_tf.set_cpu_threads`), unless TensorFlow already started."""
    import cvt_tf

    cores = len(os.sched_getaffinity(0))
    try:
        cvt_tf.set_cpu_threads(cores)
    except RuntimeError:  # TensorFlow ran ops before (an in-process caller): its settings stay
        return "threads: TensorFlow was already running, its thread settings kept"
    return f"threads: {cores} inter-op, 1 intra-op (cvt_tf.set_cpu_threads)"


class Progress:
    """A tqdm bar (done/total, images/s, ETA) on a terminal, else a plain line every few seconds."""

    def __init__(self, total: int, done: int):
        from tqdm import tqdm

        self.total, self.done, self.started, self.shown = total, done, time.perf_counter(), time.perf_counter()
        self.bar = tqdm(total=total, initial=done, unit="img", file=sys.stdout, dynamic_ncols=True) \
            if sys.stdout.isatty() else None

    def update(self, results: list) -> None:
        self.done += len(results)
        if self.bar is not None:
            self.bar.update(len(results))
        elif time.perf_counter() - self.shown >= PLAIN_PROGRESS_SECONDS or self.done == self.total:
            self.shown = time.perf_counter()
            click.echo(f"{self.done}/{self.total} images")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command("evaluate", help=HELP, short_help="Top-1/top-5 on a labelled image set, beside the PyTorch reference.")
@click.argument("data", type=click.Path())
@click.option("--artifact", required=True, type=click.Path(),
              help="The artifact: NAME.weights.h5, NAME.json or DIR/NAME.")
@click.option("--checkpoint", type=click.Path(), help="Also classify every image with the official-layout PyTorch "
              "model on these weights.")
@click.option("--layout", type=click.Choice(["auto", "imagenet-v2", "imagefolder", "labels"]), default="auto",
              show_default=True, help="How DATA gives each image's class.")
@click.option("--labels", type=click.Path(), help="CSV of relative/path,class lines (the labels layout).")
@click.option("--batch", type=click.IntRange(1, 1024), default=16, show_default=True, help="Images per model call.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images (in path order).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the summary here; the "
              "per-image CSV goes beside it.")
@click.option("--resume", is_flag=True, help="Continue the run whose per-image CSV is there.")
@click.option("--strict", is_flag=True, help="Any unusable image is an error (exit 2) instead of skipped.")
def evaluate_command(data, artifact, checkpoint, layout, labels, batch, limit, json_path, resume, strict) -> None:
    started = time.perf_counter()
    options = {"data": data, "artifact": artifact, "checkpoint": checkpoint, "layout": layout, "labels": labels,
               "batch": batch, "limit": limit, "json": json_path, "strict": strict}
    if checkpoint is not None:
        require_pytorch("evaluate --checkpoint")
        check_checkpoint_file(checkpoint)
        import converter  # noqa: F401  (torch and timm before TensorFlow)
    try:
        manifest = read_manifest(artifact)
    except ArtifactError as error:
        raise BadInput(f"--artifact: {error}") from None
    if manifest["num_classes"] == 0:
        raise BadInput(f"--artifact {artifact}: has no classification head (num_classes 0)")
    from cvt_tf.datasets import read_image_set
    from cvt_tf.evaluation_log import ResultsLog, listing_sha256
    from cvt_tf.preprocessing import EvalTransform

    image_set = read_image_set(data, layout, labels, manifest["num_classes"])
    click.echo(f"layout {image_set.layout}: {image_set.reason}")
    transform = EvalTransform.official(tuple(manifest["resolution"]))
    click.echo(f"preprocessing: {transform.describe()}; ImageNet mean/std (the official evaluation transform)")
    reference, reference_sha256 = None, None
    if checkpoint is not None:
        reference, note = reference_classifier(manifest, checkpoint)
        reference_sha256 = file_sha256(checkpoint)
        click.echo(f"pytorch: {checkpoint} is {note}")
    fingerprint = {"artifact_sha256": manifest["artifact"]["sha256"], "data_sha256": listing_sha256(image_set.items),
                   "reference_sha256": reference_sha256, "transform": transform.describe()}
    log = ResultsLog(results_path(json_path, manifest["name"]), fingerprint, resume)
    run(image_set, manifest, transform, reference, log, options, started)


def run(image_set, manifest, transform, reference, log, options, started) -> None:
    from cvt_tf import load_artifact
    from cvt_tf.evaluation import evaluate, keras_classifier
    from cvt_tf.evaluation_report import Summary

    selected = image_set.items[: options["limit"]]
    done = sum(path in log.done for path, _ in selected)
    click.echo(f"{len(selected)} images ({done} done in {log.path}); per-image results appended to {log.path}")
    click.echo(use_all_cores())
    keras = keras_classifier(load_artifact(options["artifact"]), options["batch"], transform)
    progress = Progress(len(selected), done)
    loop_started = time.perf_counter()
    try:
        results = evaluate(image_set, keras, transform, options["batch"], log, reference, options["limit"],
                           options["strict"], on_batch=progress.update)
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"interrupted after {progress.done} of {len(selected)} images (saved in {log.path}); "
                   f"resume with: {resume_command(options)}")
        raise
    progress.close()
    seconds = time.perf_counter() - loop_started
    summary = Summary(tuple(results), image_set.layout)
    skipped = summary.skipped()
    if not summary.used:
        raise BadInput(f"{image_set.root}: none of its {len(results)} images can be used (e.g. "
                       f"{skipped[0]['path']}: {skipped[0]['reason']})")
    if skipped:
        click.echo(f"warning: {len(skipped)} image(s) skipped (unreadable, truncated or too large), listed in "
                   f"`skipped`{' of ' + options['json'] if options['json'] else ''} and {log.path}: "
                   f"{skipped[0]['path']}: {skipped[0]['reason']}{', ...' if len(skipped) > 1 else ''}")
    official = official_of_artifact(manifest)
    click.echo(summary.table(manifest["name"], official.top1 if official else None))
    for line in summary.lines():
        click.echo(line)
    computed = progress.done - done
    rate = f"{computed / seconds:.1f} images/s" if computed and seconds > 0 else "nothing left to compute"
    wall = time.perf_counter() - started
    click.echo(f"{computed} images computed in {seconds:.1f} s ({rate}); wall time {wall:.1f} s")
    if options["json"]:
        write_json(Path(options["json"]), summary.to_json())
        click.echo(f"wrote {options['json']} and {log.path}")
