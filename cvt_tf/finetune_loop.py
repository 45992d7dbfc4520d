"""The fine-tuning training loop: one `tf.function` step run by `strategy.run` on every replica, for any strategy.

Keras 3's `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585: its symbolic build, then
its metric reductions), so the loop is ours, the same for OneDevice, Mirrored and MultiWorkerMirrored:
each replica's loss is its examples' cross-entropy summed and divided by the GLOBAL batch
(`tf.nn.compute_average_loss`), the Keras optimizer all-reduces (sums) the replicas' gradients inside the
replica context and applies them once, and `strategy.reduce` sums the logged loss and hits.
"""

from collections.abc import Callable

import keras


class TrainStep:
    """`step(batch) -> (loss, hits)`: one optimizer step on a distributed (images, labels) batch.

    Args:
        strategy: the `tf.distribute` strategy whose scope built `model` and its optimizer.
        model: a compiled model (its optimizer is used; `optimizer.scale_loss` adds fp16 loss scaling).
        global_batch: the images of one step over every replica.

    Returns per step the global mean cross-entropy and the number of correctly classified images.
    """

    def __init__(self, strategy, model: keras.Model, global_batch: int):
        import tensorflow as tf

        self.strategy, self.model, self.global_batch = strategy, model, global_batch
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        self.function = tf.function(self._distributed_step)

    def _replica_step(self, images, labels):
        import tensorflow as tf

        model, optimizer = self.model, self.model.optimizer
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            loss = tf.nn.compute_average_loss(self.cross_entropy(labels, logits), global_batch_size=self.global_batch)
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)  # all-reduces (sums) over the replicas
        hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=labels.dtype), labels),
                                     tf.float32))
        return loss, hits

    def _distributed_step(self, batch):
        import tensorflow as tf

        loss, hits = self.strategy.run(self._replica_step, args=batch)
        reduce = self.strategy.reduce
        return reduce(tf.distribute.ReduceOp.SUM, loss, axis=None), reduce(tf.distribute.ReduceOp.SUM, hits, axis=None)

    def __call__(self, batch) -> tuple[float, float]:
        loss, hits = self.function(batch)
        return float(loss), float(hits)


def train(step: TrainStep, batches, first_epoch: int, epochs: int, steps_per_epoch: int,
          end_epoch: Callable[[int, dict], None], verbose: int = 2) -> None:
    """Runs epochs `first_epoch..epochs-1` over the distributed dataset `batches` (their batches in order).

    After each epoch `end_epoch(epoch, logs)` with logs {"loss": mean step loss, "accuracy": training top-1}.
    `verbose`: Keras' Progbar, 1 a live bar, 2 a line per epoch, 0 none.
    """
    iterator = iter(batches)
    for epoch in range(first_epoch, epochs):
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}")
        bar = keras.utils.Progbar(steps_per_epoch, verbose=verbose, stateful_metrics=["loss", "accuracy"])
        total_loss = total_hits = 0.0
        for done in range(1, steps_per_epoch + 1):
            loss, hits = step(next(iterator))
            total_loss, total_hits = total_loss + loss, total_hits + hits
            logs = {"loss": total_loss / done, "accuracy": total_hits / (done * step.global_batch)}
            bar.update(done, list(logs.items()))
        end_epoch(epoch, logs)
