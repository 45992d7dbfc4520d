"""Fine-tuning a converted artifact on a folder of labelled images: the run, its checkpoints, its artifact.

RUN_DIR gets `checkpoint.weights.h5` + `checkpoint.json` after every epoch (switched in together, so a
kill leaves the last completed epoch), `history.csv` / `history.json`, and the fine-tuned artifact.
"""

import csv
import io
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cvt_spec import InputError, normalize_spec
from cvt_spec.artifacts import artifact_name, artifact_paths, read_manifest
from cvt_spec.atomic import fsync_path, named_errors, write_text_file, writing, writing_together
from cvt_tf.datasets import ImageSet, read_image_set
from cvt_tf.finetune_data import Split, TrainingBatches, check_batch, split_image_set, validation_arrays

CHECKPOINT = "checkpoint"
CHECKPOINT_FORMAT = "cvt-convert fine-tuning checkpoint v1"
# What must be equal for `--resume` to continue a run rather than start another.
RESUMED_SETTINGS = ("num_classes", "epochs", "batch", "learning_rate", "freeze_stages", "precision", "seed",
                    "resolution")


class FineTuneError(InputError):
    """A fine-tuning run that cannot start or resume as asked; names the file or option."""


@dataclass
class FineTuneJob:
    data: Path
    artifact: Path
    num_classes: int
    out: Path  # RUN_DIR
    epochs: int = 10
    batch: int = 32  # global: over every replica
    learning_rate: float = 1e-4
    freeze_stages: int = 0
    precision: str | None = None  # None (float32), "bf16" or "fp16"
    strategy: str = "auto"
    resume: bool = False
    seed: int = 0
    resolution: tuple | None = None  # (height, width); None: the artifact's
    layout: str = "auto"
    labels: Path | None = None
    name: str | None = None  # of the fine-tuned artifact; None: <artifact>-finetuned
    verbose: int = 2  # Keras' Progbar: 1 a live bar, 2 a line per epoch, 0 none
    command: str = ""

    def settings(self, resolution: tuple) -> dict:
        return {"num_classes": self.num_classes, "epochs": self.epochs, "batch": self.batch,
                "learning_rate": self.learning_rate, "freeze_stages": self.freeze_stages,
                "precision": self.precision, "seed": self.seed, "resolution": list(resolution)}


@dataclass
class FineTuneResult:
    strategy: str
    replicas: int
    top1_before: float
    top1_after: float
    history: list = field(default_factory=list)
    weights_path: Path | None = None  # None on a worker that is not the chief
    manifest_path: Path | None = None
    model: object = None  # the trained cvt_tf.CvT


def labelled_images(job: FineTuneJob) -> tuple[ImageSet, list[str]]:
    """The image set with classes 0..K-1, and each class's name (its folder or WordNet id).

    Raises:
        FineTuneError: the folder's class count differs from `num_classes`, or index classes are not 0..K-1.
    """
    images = read_image_set(job.data, job.layout, job.labels, num_classes=max(job.num_classes, 1000))
    classes = sorted({label for _, label in images.items})
    if len(classes) != job.num_classes:
        raise FineTuneError(f"{images.root}: holds {len(classes)} classes ({images.layout} layout), "
                            f"--num-classes is {job.num_classes}")
    if images.layout == "imagefolder":  # WordNet ids: the k-th id in ImageNet order becomes class k
        from cvt_tf.imagenet import imagenet_classes

        wnids = [wnid for wnid, _ in imagenet_classes()]
        position = {label: k for k, label in enumerate(classes)}
        items = tuple((path, position[label]) for path, label in images.items)
        return ImageSet(images.root, images.layout, images.reason, items), [wnids[label] for label in classes]
    if classes != list(range(job.num_classes)):
        raise FineTuneError(f"{images.root}: classes must be 0..{job.num_classes - 1}, got {classes[:8]}")
    return images, [str(label) for label in classes]


def _check_resumable(job, checkpoint: dict, source: dict, settings: dict, where: Path) -> None:
    stored, given = normalize_spec(checkpoint["source"]["spec"]), normalize_spec(source["spec"])
    differing = sorted(key for key in stored if stored[key] != given.get(key))
    if differing:
        raise FineTuneError(
            f"--resume: {where} fine-tunes a {checkpoint['source'].get('configuration') or 'custom'} SPEC, "
            f"--artifact {job.artifact} is another variant ({', '.join(differing[:4])} differ)"
        )
    if checkpoint["source"]["sha256"] != source["sha256"]:
        raise FineTuneError(f"--resume: {where} started from {checkpoint['source']['name']} "
                            f"(sha256 {checkpoint['source']['sha256'][:12]}), not --artifact {job.artifact}")
    changed = [f"{key} {checkpoint['settings'][key]} (now {settings[key]})" for key in RESUMED_SETTINGS
               if checkpoint["settings"].get(key) != settings[key]]
    if changed:
        raise FineTuneError(f"--resume: {where} was made with other settings: {'; '.join(changed)}")


def read_checkpoint(job: FineTuneJob, source: dict, settings: dict) -> dict | None:
    """The last completed epoch's checkpoint entry of RUN_DIR when resuming (None: start at epoch 0).

    Raises:
        FineTuneError: a checkpoint without `--resume`, or one of another variant, artifact or settings.
    """
    path = Path(job.out) / f"{CHECKPOINT}.json"
    if not path.is_file():
        return None
    if not job.resume:
        raise FineTuneError(f"{path}: --out holds a fine-tuning run already; pass --resume to continue it")
    try:
        checkpoint = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FineTuneError(f"{path}: not a readable checkpoint ({error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise FineTuneError(f"{path}: not a fine-tuning checkpoint (no format {CHECKPOINT_FORMAT!r})")
    _check_resumable(job, checkpoint, source, settings, path)
    return checkpoint


def _history_csv(rows: list) -> str:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def write_history(run_dir: Path, rows: list) -> None:
    for name, text in (("history.json", json.dumps(rows, indent=2) + "\n"), ("history.csv", _history_csv(rows))):
        with writing(run_dir / name) as staged:
            write_text_file(staged, text)


def checkpoint_saver(run_dir: Path, model, entry: dict):
    """`save(epochs_done, rows)`: model and optimizer state, the epoch and the history, switched in together."""
    names = (f"{CHECKPOINT}.weights.h5", f"{CHECKPOINT}.json")

    def save(epochs_done: int, rows: list) -> None:
        with writing_together(run_dir, CHECKPOINT, names) as version:
            weights = version / names[0]
            with named_errors(weights):
                model.save_weights(weights)
                fsync_path(weights)
            text = json.dumps({**entry, "epochs_done": epochs_done, "history": rows}, indent=2)
            write_text_file(version / names[1], text + "\n")
        write_history(run_dir, rows)

    return save


def write_finetuned_artifact(model, job: FineTuneJob, source: dict, extra: dict) -> tuple[Path, Path]:
    """The trained weights as an artifact like a converted one (float32, no optimizer state) in RUN_DIR."""
    from converter.artifact import write_artifact
    from converter.manifest import library_versions, parameter_count
    from cvt_tf import CvT

    plain = CvT(spec=model.spec, num_classes=model.num_classes, name=model.name).build_for_any_size()
    trained = {variable.path: variable for variable in model.weights}
    for variable in plain.weights:
        variable.assign(np.asarray(trained[variable.path].numpy(), np.float32))
    manifest = {
        "configuration": source.get("configuration"),
        "spec_source": f"fine-tuned from {source['name']}",
        "spec": model.spec, "num_classes": model.num_classes, "resolution": extra["resolution"],
        "parameters": parameter_count(plain),
        "source": {"fine_tuned_from": source["name"], "sha256": source["sha256"], "layout": "keras"},
        "tolerance": None, "parity": None, "classes": extra.pop("classes"),
        "fine_tuning": extra, "versions": library_versions(),
    }
    name = job.name or f"{source['name']}-finetuned"
    return write_artifact(plain, job.out, name, manifest)


def _source(job: FineTuneJob) -> dict:
    manifest = read_manifest(job.artifact)
    return {"name": artifact_name(job.artifact), "sha256": manifest["artifact"]["sha256"],
            "configuration": manifest.get("configuration"), "spec": manifest["spec"],
            "resolution": manifest["resolution"]}


def _compiled_model(job: FineTuneJob, strategy, steps_per_epoch: int):
    """The artifact with a new head, compiled for `job`, its variables placed by `strategy`."""
    from cvt_tf.finetune import compile_for_finetuning, finetune_model

    with strategy.scope():
        model = finetune_model(artifact_paths(job.artifact)[0], job.num_classes, job.freeze_stages, job.precision,
                               job.seed)
        compile_for_finetuning(model, job.learning_rate, job.epochs * steps_per_epoch)
    return model


def _train(job: FineTuneJob, strategy, model, batches: TrainingBatches, first_epoch: int, recorder) -> None:
    from cvt_tf.finetune_loop import TrainStep, train

    dataset = strategy.distribute_datasets_from_function(
        lambda context: batches.dataset(context, first_epoch, job.epochs))
    train(TrainStep(strategy, model, job.batch), dataset, first_epoch, job.epochs, batches.steps_per_epoch,
          recorder, job.verbose)


def _starting_point(job: FineTuneJob, model, checkpoint: dict | None, top1, progress) -> tuple[int, list, float]:
    """(first epoch, history so far, top-1 before fine-tuning): from RUN_DIR's checkpoint, or epoch 0."""
    if checkpoint is None:
        first_epoch, rows, before = 0, [], top1()
    else:
        model.load_weights(Path(job.out) / f"{CHECKPOINT}.weights.h5")
        first_epoch, rows, before = checkpoint["epochs_done"], checkpoint["history"], checkpoint["top1_before"]
        progress(f"resuming after epoch {first_epoch} of {job.epochs}")
    progress(f"validation top-1 before fine-tuning: {before:.2%}")
    return first_epoch, rows, before


def _finished(job: FineTuneJob, before: float, after: float, started: float) -> dict:
    return {"top1_before": before, "top1_after": after, "history": "history.json", "command": job.command,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 1)}


def run_finetune(job: FineTuneJob, progress=print) -> FineTuneResult:
    """Fine-tunes `job.artifact` on `job.data` with a new head; returns the figures and, on the chief, the paths.

    Input is checked before any TensorFlow device is set up (a strategy must come first). Every process of a
    multi-worker job runs this; only the chief writes to RUN_DIR, which every worker must be able to read.

    Raises:
        DatasetError, FineTuneError, ArtifactError: bad input, nothing written.
    """
    started = time.perf_counter()
    images, class_names = labelled_images(job)
    split: Split = split_image_set(images, job.seed)
    source = _source(job)
    resolution = tuple(job.resolution or source["resolution"])
    settings = job.settings(resolution)
    checkpoint = read_checkpoint(job, source, settings)

    from cvt_tf.finetune import EpochRecorder, Top1, is_chief, make_strategy, strategy_name

    strategy = make_strategy(job.strategy)
    replicas = strategy.num_replicas_in_sync
    check_batch(job.batch, len(split.train), replicas)
    chief = is_chief(strategy)
    batches = TrainingBatches(images.root, split.train, resolution, job.batch, job.seed)
    validation = validation_arrays(images.root, split.validation, resolution)
    progress(f"{len(split.train)} training and {len(split.validation)} validation images in {job.num_classes} "
             f"classes ({images.layout}: {images.reason}); {strategy_name(strategy)} strategy, {replicas} "
             f"replica(s), {batches.steps_per_epoch} steps of {job.batch} per epoch")
    model = _compiled_model(job, strategy, batches.steps_per_epoch)
    top1 = Top1(model, *validation, batch=job.batch)
    first_epoch, rows, before = _starting_point(job, model, checkpoint, top1, progress)
    entry = {"format": CHECKPOINT_FORMAT, "source": source, "settings": settings, "top1_before": before}
    save = checkpoint_saver(Path(job.out), model, entry) if chief else None
    recorder = EpochRecorder(top1, rows, save)
    if first_epoch < job.epochs:
        _train(job, strategy, model, batches, first_epoch, recorder)
    after = top1()
    progress(f"validation top-1 after {job.epochs} epochs: {after:.2%} (before: {before:.2%})")
    result = FineTuneResult(strategy_name(strategy), replicas, before, after, rows, model=model)
    if chief:
        extra = {"classes": class_names, "data": str(images.root), "layout": images.layout,
                 "images": {"train": len(split.train), "validation": len(split.validation)},
                 "resolution": list(resolution), "strategy": result.strategy, "replicas": replicas,
                 "settings": settings, **_finished(job, before, after, started)}
        result.weights_path, result.manifest_path = write_finetuned_artifact(model, job, source, extra)
        progress(f"wrote {result.weights_path} and {result.manifest_path}")
    return result

