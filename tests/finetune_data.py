"""What the fine-tuning tests share: a tiny converted artifact, a generated image set, weights read from disk."""

import json
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from converter.pipeline import Conversion, convert
from cvt_spec import normalize_spec

# One colour per class, and a stripe direction, so a few epochs can learn them; noise makes every image differ.
COLOURS = ((220, 40, 40), (40, 190, 60), (50, 70, 220), (225, 215, 50), (190, 50, 210))


def tiny_artifact(out_dir: Path, spec: dict, name: str = "tiny", num_classes: int = 10) -> Path:
    """A synthetic conversion of `spec` at 48x48 (parity checked); returns its `<dir>/<name>` stem."""
    convert(Conversion(spec=normalize_spec(spec), num_classes=num_classes, resolution=(48, 48), name=name,
                       out_dir=out_dir), progress=lambda _: None)
    return out_dir / name


def image_set(root: Path, per_class: int, classes: int = 5, seed: int = 0) -> Path:
    """`root/<class index>/<i>.png`: noisy images of each class's colour, horizontal or vertical stripes, 40-60 px."""
    rng = np.random.default_rng(seed)
    for label in range(classes):
        folder = root / str(label)
        folder.mkdir(parents=True)
        for i in range(per_class):
            height, width = (int(n) for n in rng.integers(40, 61, 2))
            pixels = np.asarray(COLOURS[label], np.float64) + rng.normal(0, 20, (height, width, 3))
            stripes = (np.arange(height)[:, None] // 4 % 2) if label % 2 else (np.arange(width)[None, :] // 4 % 2)
            pixels = pixels * (0.75 + 0.25 * stripes[..., None])
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def stored_weights(stem: Path) -> dict:
    """{variable name: array} of an artifact's `.weights.h5`, named as its manifest names them."""
    names = json.loads(Path(f"{stem}.json").read_text())["artifact"]["variables"]
    with h5py.File(f"{stem}.weights.h5", "r") as handle:
        return {names[path]: handle[path][()] for path in names}


def max_weight_diff(first: dict, second: dict) -> float:
    assert first.keys() == second.keys()
    return max(float(np.max(np.abs(first[k] - second[k]))) for k in first)
