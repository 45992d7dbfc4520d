"""TensorFlow's CPU threads for CvT graphs: the setting that makes them fast, and the warning without it.

TensorFlow's default hands every op to an intra-op pool and waits for it; on a few cores that costs
more than the second thread gives, while CvT's independent streams keep the cores busy on their own
(README, "Speed"). The threads can only be set before TensorFlow runs its first op, so the model
cannot choose them itself: it says so once instead.
"""

import warnings

import tensorflow as tf

from cvt_tf.layers.options import check_count

SET_THREADS_CALL = "cvt_tf.set_cpu_threads(os.cpu_count())"


class ThreadingWarning(UserWarning):
    """A CvT graph traced under TensorFlow's default CPU threads, slower than with `set_cpu_threads`."""


def set_cpu_threads(cores: int) -> dict:
    """TensorFlow's CPU threads for CvT graphs: one intra-op thread, `cores` inter-op threads.

    Each op then runs on the thread that schedules it, and the model's independent streams keep
    the cores busy. Call it before TensorFlow runs its first op; returns the two settings.
    """
    check_count("cores", cores)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(cores)
    except RuntimeError as error:
        raise RuntimeError(
            "cvt_tf.set_cpu_threads must run before TensorFlow runs its first op "
            f"(TensorFlow: {error}); call it right after importing cvt_tf"
        ) from None
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def warn_on_default_threads() -> None:
    """Warns when TensorFlow's CPU threads are its defaults and no GPU is visible; called whenever a CvT
    inference graph is traced, shown once per process (Python shows a warning once per place)."""
    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() or threading.get_inter_op_parallelism_threads():
        return
    if tf.config.list_logical_devices("GPU"):
        return
    warnings.warn(
        f"cvt_tf: this CvT graph runs on TensorFlow's default CPU threads; {SET_THREADS_CALL} right "
        "after importing cvt_tf, before TensorFlow runs an op, makes model.predict, tf.function and "
        "SavedModel calls of it faster on CPU (README, 'Speed')",
        ThreadingWarning, stacklevel=1,  # one place: shown once per process, whoever traces
    )
