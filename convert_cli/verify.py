"""`convert.py verify ARTIFACT --checkpoint FILE`: reload a written artifact from disk and rerun parity.

Exit 0 when every output is within the tolerance, 1 when not, 2 when the artifact or checkpoint is bad.
"""

import click

from convert_cli.errors import BadInput
from convert_cli.inputs import require_pytorch
from convert_cli.plan import check_atol


def _optional_atol(ctx, param, value):
    return None if value is None else check_atol(ctx, param, value)


@click.command("verify")
@click.argument("artifact", type=click.Path())
@click.option("--checkpoint", type=click.Path(), help="The checkpoint the artifact was converted from.")
@click.option("--synthetic", is_flag=True, help="Regenerate the synthetic checkpoint the manifest records.")
@click.option("--atol", type=float, callback=_optional_atol,
              help="Largest allowed absolute difference (default: the manifest's).")
def verify_command(artifact: str, checkpoint: str | None, synthetic: bool, atol: float | None) -> None:
    """Reload ARTIFACT with cvt_tf.load_artifact and rerun parity against its checkpoint."""
    if (checkpoint is None) == (not synthetic):
        raise BadInput("verify needs exactly one of --checkpoint FILE and --synthetic")
    require_pytorch("verify")
    import converter  # noqa: F401  (torch before TensorFlow)
    from converter.parity import ParityError
    from converter.verify import verify_artifact

    report, same_source = verify_artifact(artifact, checkpoint, atol, progress=click.echo)
    click.echo(report.table())
    click.echo("the checkpoint is the source the manifest records" if same_source else
               "note: the checkpoint differs from the source the manifest records")
    if not report.passed:
        raise ParityError(report)
