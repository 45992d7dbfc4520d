"""The import-order trap of the CUDA torch build: triton imported after TensorFlow segfaults.

The Makefile leaves triton out and the entry points import torch first; both are proven here.
"""

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(
    "code",
    [
        "import tensorflow; import timm; import torchvision",  # triton left out: any order works
        "import converter; import cvt_tf; import tensorflow",  # the entry points' order
        "import cvt_tf; import official_ref",  # a TF user who later loads the reference
    ],
)
def test_imports_survive(code):
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-500:]}"


def test_cvt_tf_does_not_import_torch_and_reference_does_not_import_tensorflow():
    code = (
        "import sys, cvt_tf; assert 'torch' not in sys.modules, 'cvt_tf imported torch'\n"
        "import official_ref; assert 'torch' in sys.modules\n"
    )
    check = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-500:]
    code = "import sys, official_ref; assert 'tensorflow' not in sys.modules, 'official_ref imported TF'"
    check = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-500:]
