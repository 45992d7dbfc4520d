"""The package as a user installs it: `pip install .` in a fresh venv, no PyTorch, yet artifacts load and predict."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from converter.pipeline import Conversion, convert
from cvt_spec import normalize_spec
from cvt_tf import load_artifact, preprocess_input
from tests.conftest import REPO, tiny_spec


def _run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)


def _site_packages_mb(venv):
    return sum(f.stat().st_size for f in (venv / "lib").rglob("*") if f.is_file()) / 2**20


@pytest.mark.slow
def test_the_runtime_installs_without_pytorch_and_loads_and_predicts(tmp_path):
    job = Conversion(spec=normalize_spec(tiny_spec()), num_classes=1000, resolution=(64, 64), name="tiny",
                     out_dir=tmp_path / "artifacts", seed=2)
    weights, _, _ = convert(job, progress=lambda _: None)
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(photo)
    expected = np.asarray(load_artifact(weights)(preprocess_input(photo, 64)))

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    install = _run([str(venv / "bin" / "pip"), "install", "--quiet", str(REPO)],
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert install.returncode == 0 and "Warning" not in install.stderr, install.stderr[-2000:]
    python = str(venv / "bin" / "python")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    script = (
        "import importlib.util, json, sys, numpy as np, cvt_tf\n"
        f"model = cvt_tf.load_artifact({str(weights)!r})\n"
        f"logits = model.predict(cvt_tf.preprocess_input({str(photo)!r}, 64), verbose=0)\n"
        "print(json.dumps({'torch': importlib.util.find_spec('torch') is not None, "
        "'cvt_tf': cvt_tf.__file__, 'logits': logits.tolist()}))\n"
    )
    loaded = _run([python, "-c", script], cwd=tmp_path, env=env)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    figures = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert not figures["torch"] and str(venv) in figures["cvt_tf"]  # the installed package, not the checkout
    np.testing.assert_allclose(figures["logits"], expected, atol=1e-5)

    predicted = _run([str(venv / "bin" / "cvt-convert"), "predict", str(photo), "--artifact", str(weights)],
                     cwd=tmp_path, env=env)
    assert predicted.returncode == 0 and "artifact tiny: 1000 classes at 64x64" in predicted.stdout, predicted.stderr
    module = _run([python, "-m", "convert_cli", "--help"], cwd=tmp_path, env=env)
    assert module.returncode == 0 and "Convert an official PyTorch CvT checkpoint" in module.stdout
    refused = _run([str(venv / "bin" / "cvt-convert"), "--config", "cvt-13", "--synthetic", "--out", "x"],
                   cwd=tmp_path, env=env)
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        "error: converting a checkpoint needs the PyTorch reference, which is not installed: "
        "pip install 'cvt-convert[convert]'"]
    print(f"slim install: {_site_packages_mb(venv):.0f} MB")
