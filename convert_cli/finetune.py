"""`convert.py finetune DATA --artifact A --num-classes K --out RUN_DIR`: a new head trained on your images.

Options in, `converter.finetune.run_finetune` does the work; one `error:` line on bad input (exit 2).
"""

import shlex
import sys

import click

from convert_cli.inputs import check_artifact_name, check_output_dir
from convert_cli.plan import parse_resolution
from cvt_spec.artifacts import check_artifact_files

HELP = """Fine-tune a converted artifact on DATA (a folder of class folders) with a new NUM_CLASSES head.

\b
  python convert.py finetune flowers/ --artifact artifacts/cvt-13-224x224_1k --num-classes 5 --out runs/flowers
  python convert.py finetune flowers/ ... --strategy mirrored          (every local GPU)
  TF_CONFIG='{...}' python convert.py finetune flowers/ ... --strategy multi-worker   (on every machine)
  python convert.py finetune flowers/ ... --resume                     (after a kill: from the last epoch)

A seeded fifth of each class validates (official evaluation transform); the rest trains with the official
augmentation (random resized crop, horizontal flip). RUN_DIR gets a checkpoint every epoch, history.csv and
history.json, and the fine-tuned artifact (RUN_DIR/NAME.weights.h5 + NAME.json), which inspect, verify and
export read like any other. Exit codes: 0 ok, 2 bad input (one `error:` line), 3 internal error.
"""


@click.command("finetune", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("data", type=click.Path())
@click.option("--artifact", required=True, type=click.Path(), help="The converted artifact to start from.")
@click.option("--num-classes", required=True, type=click.IntRange(min=1), help="Classes of the new head.")
@click.option("--out", required=True, type=click.Path(), help="RUN_DIR: checkpoints, history, the artifact.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Global batch, split over the replicas.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="Peak AdamW learning rate (cosine decay over the run).")
@click.option("--freeze-stages", type=click.IntRange(0, 3), default=0, show_default=True,
              help="Keep the first N stages' weights.")
@click.option("--mixed-precision", type=click.Choice(["bf16", "fp16"]), help="Default: float32.")
@click.option("--strategy", type=click.Choice(["auto", "one", "mirrored", "multi-worker"]), default="auto",
              show_default=True, help="tf.distribute strategy; multi-worker reads TF_CONFIG.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its last completed epoch.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds the split, the epoch orders, the augmentation and the new head.")
@click.option("--res", callback=parse_resolution, help="Training resolution, H or HxW (default: the artifact's).")
@click.option("--layout", type=click.Choice(["auto", "imagenet-v2", "imagefolder", "labels"]), default="auto",
              show_default=True, help="How DATA names classes (as `evaluate`).")
@click.option("--labels", type=click.Path(dir_okay=False), help="CSV of relative/path,class for --layout labels.")
@click.option("--name", help="Name of the fine-tuned artifact (default: <artifact>-finetuned).")
@click.option("--debug", is_flag=True, help="Show TensorFlow's logs and full tracebacks.")
def finetune(data, artifact, num_classes, out, epochs, batch, lr, freeze_stages, mixed_precision, strategy, resume,
             seed, res, layout, labels, name, debug) -> None:
    check_artifact_files(artifact)
    check_output_dir(out)
    if name is not None:
        check_artifact_name(name)
    import converter  # noqa: F401  (torch, when installed, before TensorFlow)
    from converter.finetune import FineTuneJob, run_finetune

    job = FineTuneJob(data=data, artifact=artifact, num_classes=num_classes, out=out, epochs=epochs, batch=batch,
                      learning_rate=lr, freeze_stages=freeze_stages, precision=mixed_precision, strategy=strategy,
                      resume=resume, seed=seed, resolution=res, layout=layout, labels=labels, name=name,
                      verbose=1 if sys.stdout.isatty() else 2,
                      command=shlex.join(["convert.py", *sys.argv[1:]]))
    run_finetune(job, progress=click.echo)
