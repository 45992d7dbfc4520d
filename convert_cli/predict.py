"""`convert.py predict`: classify images with a converted artifact, optionally beside the PyTorch reference.

Both frameworks get the same tensor from `cvt_tf.preprocess_input` (the official evaluation transform).
"""

from pathlib import Path

import click
import numpy as np

from convert_cli.errors import BadInput, ParityFailed
from convert_cli.inputs import require_pytorch
from convert_cli.plan import check_atol
from cvt_spec import ArtifactError
from cvt_spec.artifacts import read_manifest

HELP = """Top classes of IMAGE... from a converted artifact, with the official preprocessing.

\b
  python convert.py predict cat.jpg --artifact artifacts/cvt-21-384x384_1k
  python convert.py predict cat.jpg --artifact artifacts/cvt-21-384x384_1k \\
      --checkpoint checkpoints/CvT-21-384x384-IN-1k.pth

With --checkpoint, the official-layout PyTorch model classifies the same preprocessed tensor
and the two are compared: logits max abs diff, top-1 and top-5 agreement. Exit codes: 0 ok,
1 logits differ by more than --atol, 2 bad input (one `error:` line).
"""


def class_labels(num_classes: int) -> list[str]:
    """Printable label of each class index: `wnid name` for ImageNet-1k heads, else `class i`."""
    from cvt_tf.imagenet import NUM_IMAGENET_CLASSES, imagenet_classes

    if num_classes == NUM_IMAGENET_CLASSES:
        return [f"{wnid} {name}" for wnid, name in imagenet_classes()]
    return [f"class {index}" for index in range(num_classes)]


def softmax(logits) -> np.ndarray:
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def read_images(paths) -> list[tuple]:
    """[(path, RGB image, note or None)], or one BadInput listing every file that cannot be used."""
    from cvt_tf.images import ImageError, open_image, to_rgb

    images, problems = [], []
    for path in paths:
        try:
            image = open_image(path)
            rgb = to_rgb(image, path)
        except ImageError as error:
            problems.append(str(error))
            continue
        note = None
        if image.mode != "RGB":
            note = f"{image.mode} converted to RGB as the official loader does"
            if "A" in image.mode:
                note += ", alpha dropped"
        images.append((path, rgb, note))
    if problems:
        raise BadInput(f"{len(problems)} of {len(paths)} images cannot be used: " + "; ".join(problems))
    return images


def official_reference(manifest: dict, checkpoint) -> tuple:
    """(official_ref model, one-line note on whether the checkpoint is the artifact's source).

    Raises:
        CheckpointError, LayoutError: the checkpoint cannot be read or does not fit the artifact.
    """
    from converter.steps import load_source
    from official_ref import load_reference

    spec, num_classes = manifest["spec"], manifest["num_classes"]
    target = f"the artifact's SPEC and {num_classes}-class head"
    source = load_source(checkpoint, spec, num_classes, progress=lambda _: None, target=target)
    same = source.is_recorded_in(manifest)
    note = "the artifact's source checkpoint" if same else "NOT the artifact's source checkpoint (sha256 differs)"
    return load_reference(spec, num_classes, source.weights.arrays), note


def reference_logits(manifest: dict, checkpoint, batch: np.ndarray) -> np.ndarray:
    """official_ref's logits on the (N, H, W, 3) batch the Keras model gets."""
    import torch

    reference, source_note = official_reference(manifest, checkpoint)
    click.echo(f"pytorch: {checkpoint} is {source_note}")
    with torch.inference_mode():
        return reference(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))).numpy()


def print_table(labels: list[str], columns: list[tuple], top: int) -> None:
    """Side-by-side top-`top` lists; `columns` is [(title, probabilities of one image)]."""
    from cvt_tf.imagenet import top_classes

    ranked = [(title, probs, top_classes(probs, top)) for title, probs in columns]
    width = 2 + max([len(title) for title, _ in columns] + [len(labels[i]) for _, _, order in ranked for i in order])
    click.echo("  #  " + " | ".join(f"{title:<{width}}{'prob':>8}" for title, _ in columns))
    for rank in range(top):
        cells = (f"{labels[order[rank]]:<{width}}{probs[order[rank]]:>8.2%}" for _, probs, order in ranked)
        click.echo(f"{rank + 1:>3}  " + " | ".join(cells))


def agreement(keras_logits, torch_logits, top: int) -> tuple[float, str]:
    """One line: max abs diff of the logits and whether the top-1 and top-`top` classes agree."""
    from cvt_tf.imagenet import top_classes

    diff = float(np.max(np.abs(np.asarray(keras_logits, np.float64) - torch_logits)))
    keras_top, torch_top = top_classes(keras_logits, top), top_classes(torch_logits, top)
    top1 = "agrees" if keras_top[0] == torch_top[0] else "DIFFERS"
    if np.array_equal(keras_top, torch_top):
        topk = "agrees (same classes, same order)"
    elif set(keras_top) == set(torch_top):
        topk = "same classes, different order"
    else:
        topk = "DIFFERS"
    return diff, f"logits max abs diff {diff:.3e}; top-1 {top1}; top-{top} {topk}"


@click.command("predict", help=HELP, short_help="Classify images with an artifact, beside the PyTorch reference.")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--artifact", required=True, type=click.Path(),
              help="The artifact: NAME.weights.h5, NAME.json or DIR/NAME.")
@click.option("--checkpoint", type=click.Path(), help="Also run the official-layout PyTorch model on these weights.")
@click.option("--top", type=click.IntRange(1, 1000), default=5, show_default=True, help="Classes to list.")
@click.option("--atol", type=float, default=1e-4, show_default=True, callback=check_atol,
              help="Largest allowed logits difference with --checkpoint.")
def predict(images: tuple, artifact: str, checkpoint: str | None, top: int, atol: float) -> None:
    if checkpoint is not None:
        require_pytorch("predict --checkpoint")
        import converter  # noqa: F401  (torch and timm before TensorFlow)

    try:
        manifest = read_manifest(artifact)
    except ArtifactError as error:
        raise BadInput(f"--artifact: {error}") from None
    num_classes = manifest["num_classes"]
    if num_classes == 0:
        raise BadInput(f"--artifact {artifact}: has no classification head (num_classes 0)")
    loaded = read_images(images)
    from cvt_tf import EvalTransform, load_artifact, preprocess_input

    height, width = manifest["resolution"]
    transform = EvalTransform.official((height, width))
    batch = preprocess_input([rgb for _, rgb, _ in loaded], (height, width), transform.center_crop)
    name = manifest["name"]
    click.echo(f"artifact {name}: {num_classes} classes at {height}x{width}")
    click.echo(f"preprocessing: {transform.describe()}; ImageNet mean/std (the official evaluation transform)")
    torch_logits = None if checkpoint is None else reference_logits(manifest, checkpoint, batch)
    keras_logits = np.asarray(load_artifact(artifact).predict(batch, verbose=0))
    columns = [(f"keras: {name}", softmax(keras_logits))]
    if torch_logits is not None:
        columns.append((f"pytorch: {Path(checkpoint).name}", softmax(torch_logits)))

    labels = class_labels(num_classes)
    top = min(top, num_classes)
    worst = 0.0
    for index, (path, rgb, note) in enumerate(loaded):
        click.echo("")
        click.echo(f"{path} ({rgb.width}x{rgb.height}{', ' + note if note else ''})")
        print_table(labels, [(title, probs[index]) for title, probs in columns], top)
        if torch_logits is not None:
            diff, line = agreement(keras_logits[index], torch_logits[index], top)
            worst = max(worst, diff)
            click.echo(line)
    if torch_logits is not None and worst > atol:
        raise ParityFailed(f"parity failed: Keras and PyTorch logits differ by {worst:.3e} > atol {atol:g}")
