"""What an artifact's manifest records besides the weights: SPEC, source, parity, versions, the run.

Everything but `run` depends only on the inputs, so two conversions of one checkpoint give equal manifests.
"""

import platform

import numpy as np


def library_versions() -> dict:
    """The versions of the libraries in play; `torch` None in the runtime install (fine-tuning needs none)."""
    import importlib.util

    import h5py
    import keras
    import tensorflow

    torch = importlib.import_module("torch") if importlib.util.find_spec("torch") is not None else None
    return {
        "python": platform.python_version(), "torch": torch.__version__ if torch is not None else None,
        "tensorflow": tensorflow.__version__, "keras": keras.__version__,
        "numpy": np.__version__, "h5py": h5py.__version__,
    }


def parameter_count(model) -> int:
    return int(sum(np.prod(variable.shape) for variable in model.weights))


def conversion_manifest(job, model, source, report) -> dict:
    """The manifest of converting `job`'s checkpoint (`source`, a `converter.steps.Source`) to `model`."""
    return {
        "configuration": job.configuration,
        "spec_source": job.spec_source,
        "spec": job.spec,
        "num_classes": job.num_classes,
        "resolution": list(job.resolution),
        "parameters": parameter_count(model),
        "source": source.record,
        "tolerance": {"atol": job.atol} if job.parity else None,
        "parity": report.to_dict() if report else None,
        "dtype_notes": source.weights.notes,
        "torch_layout": source.torch_layout,
        "versions": library_versions(),
    }
