"""The click group behind `python convert.py`: conversion options and subcommands.

Every failure ends as one `error:` line on stderr: exit code 1 (parity), 2 (bad input), 3 (a bug).
"""

import shlex
import sys
import traceback
import warnings

import click

from convert_cli.errors import BadInput, Commands, quiet_native_stderr, report_and_exit
from convert_cli.evaluate import evaluate_command
from convert_cli.export import export
from convert_cli.finetune import finetune
from convert_cli.inspect import inspect_command
from convert_cli.plan import check_atol, parse_resolution, plan_conversion
from convert_cli.predict import predict
from convert_cli.release import release_command
from convert_cli.verify import verify_command
from cvt_spec import VARIANTS

HELP = """Convert an official PyTorch CvT checkpoint to a Keras 3 artifact and prove parity.

\b
  python convert.py --config cvt-21 --res 384 --synthetic
  python convert.py --config cvt-21 --res 384 --checkpoint CvT-21-384x384-IN-1k.pth
  python convert.py --spec cvt-13-224x224.yaml --checkpoint my.pth --name my-cvt
  python convert.py --checkpoint checkpoints/CvT-13-384x384-IN-22k.pth   (variant recognised)
  python convert.py --all [--synthetic]      (every official checkpoint in checkpoints/)
  python convert.py inspect artifacts/cvt-21-384x384_1k.weights.h5

Writes OUT/NAME.weights.h5 and OUT/NAME.json (manifest) only when parity passes.
Exit codes: 0 ok, 1 parity failed, 2 bad input or usage, 3 internal error.
"""


def show_mapping(job) -> None:
    from converter.layout import official_shapes
    from converter.mapping import mapping_rows

    shapes = official_shapes(job.spec, job.num_classes)
    rows = mapping_rows(job.spec, job.num_classes)
    for row in rows:
        torch_shape = shapes[row.torch_key][0]
        keras_shape = row.keras_shape_of(torch_shape)
        click.echo(f"{row.torch_key} {list(torch_shape)} -> {row.keras_path} {list(keras_shape)} [{row.transform}]")
    ignored = len(shapes) - len(rows)
    click.echo(f"# {len(rows)} rows; ignored: {ignored} BatchNorm num_batches_tracked")


def run_conversion(job) -> None:
    from converter.layout import HeadMismatch
    from converter.memory import prefer_returning_memory
    from converter.pipeline import convert

    prefer_returning_memory()
    try:
        weights_path, manifest_path, _ = convert(job, progress=click.echo)
    except HeadMismatch as error:
        raise BadInput(error.describe("--num-classes")) from None
    click.echo(f"wrote {weights_path} and {manifest_path}")


@click.group(cls=Commands, invoke_without_command=True, help=HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", help=f"Predefined variant: {', '.join(VARIANTS)}.")
@click.option("--spec", type=click.Path(dir_okay=False), help="Official experiment YAML, or a JSON/YAML of SPEC keys.")
@click.option("--res", callback=parse_resolution, help="Input resolution, H or HxW (default 224; 384 for cvt-w24).")
@click.option("--version", type=click.Choice(["1k", "22k"]),
              help="ImageNet-1k or -22k pretraining of the official checkpoint (default: from the "
              "checkpoint's file name, else 1k).")
@click.option("--checkpoint", type=click.Path(), help="Checkpoint file (.pth, .bin or .safetensors; official or "
              "Hugging Face transformers layout). "
              "Default for --config: checkpoints/<official file name>.")
@click.option("--num-classes", type=click.IntRange(min=0), help="Head size (default 1000, or the YAML's).")
@click.option("--name", help="Artifact name (default e.g. cvt-21-384x384_1k).")
@click.option("--out", default="artifacts", show_default=True, type=click.Path(file_okay=False),
              help="Output directory.")
@click.option("--atol", type=float, default=1e-4, show_default=True, callback=check_atol,
              help="Largest allowed absolute difference on any output.")
@click.option("--no-parity", is_flag=True, help="Skip the parity check (not recommended).")
@click.option("--synthetic", is_flag=True, help="Use a seeded synthetic checkpoint in the official layout.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of --synthetic and the parity inputs.")
@click.option("--show-mapping", is_flag=True, help="Print every mapping row and exit; needs no checkpoint.")
@click.option("--all", "release_all", is_flag=True,
              help="Convert every official checkpoint found in checkpoints/ (all seven with --synthetic), "
              "print a summary table and write OUT/SHA256SUMS.")
@click.option("--debug", is_flag=True, help="Show TensorFlow's logs and full tracebacks.")
@click.pass_context
def main(ctx, **options) -> None:
    if ctx.invoked_subcommand is not None:
        return
    command = shlex.join(["convert.py", *sys.argv[1:]])
    if options["release_all"]:
        release_command(options, command)
        return
    job = plan_conversion(options, command=command)
    if options["show_mapping"]:
        show_mapping(job)
        return
    run_conversion(job)


def run(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI with one-line errors and quiet native logs."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    # The advice to library users about TensorFlow's threads (cvt_tf/threads.py): the CLI picks its own.
    warnings.filterwarnings("ignore", module=r"cvt_tf\.threads")
    with quiet_native_stderr(enabled=not debug) as stderr:
        try:
            main.main(args=argv, prog_name="convert.py", standalone_mode=False)
        except (Exception, KeyboardInterrupt) as error:
            if debug:
                traceback.print_exc()
            report_and_exit(error, stderr)


for command in (predict, inspect_command, verify_command, export, evaluate_command, finetune):
    main.add_command(command)
