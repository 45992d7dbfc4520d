"""Convert official PyTorch CvT checkpoints to Keras 3 artifacts: `python convert.py --help`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from convert_cli.app import run  # noqa: E402

if __name__ == "__main__":
    run()
