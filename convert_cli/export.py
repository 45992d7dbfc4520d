"""`python convert.py export ARTIFACT --format FORMAT`: a converted artifact in other formats.

Each export is run back from disk against the Keras model and recorded in the artifact's manifest.
"""

import json
import shlex
import sys

import click

from convert_cli.errors import BadInput
from convert_cli.inputs import require_package, require_pytorch
from convert_cli.plan import check_atol, parse_resolution
from cvt_spec.artifacts import EXPORT_FORMATS, QUANTIZATIONS

HELP = """Export a converted artifact as an official-layout PyTorch state dict, TFLite, a SavedModel,
a keras-hub preset or an OpenVINO IR.

\b
  python convert.py export artifacts/cvt-13-224x224_1k.json --format pth
  python convert.py export artifacts/cvt-13-224x224_1k.json --format tflite
  python convert.py export artifacts/cvt-13-224x224_1k.json --format tflite --quantize dynamic
  python convert.py export artifacts/cvt-13-224x224_1k.json --format saved_model
  python convert.py export artifacts/cvt-13-224x224_1k.json --format openvino

Writes <name>.pth, <name>.tflite, <name>.int8.tflite, or the directory <name>.saved_model/,
<name>.keras-hub/ or <name>.openvino/ (model.xml + model.bin) beside the artifact (or --out), only
after running it back from disk: the .pth in official_ref (strict=True) and the others against Keras,
within --atol (int8 TFLite: figures only). Appends an entry (format, sha256, parity figures) to the
artifact's manifest. TFLite and OpenVINO have a fixed resolution (--res) and an open batch. Compile
the IR with {"INFERENCE_PRECISION_HINT": "f32"}: on CPUs with AMX or AVX-512 BF16, OpenVINO
otherwise computes in bfloat16. Exit codes: 0 ok, 1 parity failed, 2 bad input.
"""


@click.command("export", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("artifact", type=click.Path())
@click.option("--format", "export_format", type=click.Choice(EXPORT_FORMATS), required=True, help="Output format.")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default="none", show_default=True,
              help="TFLite only: `dynamic` stores int8 weights (dynamic-range quantization).")
@click.option("--out", type=click.Path(),
              help="Output file (a directory for saved_model, keras-hub, openvino); default beside the artifact.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--res", callback=parse_resolution, help="TFLite / OpenVINO input resolution and parity inputs, H or HxW "
              "(default: the artifact's).")
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="Number of seeded parity inputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the parity inputs.")
@click.option("--atol", type=float, default=1e-4, show_default=True, callback=check_atol,
              help="Largest allowed absolute difference (not applied to int8 TFLite).")
@click.option("--debug", is_flag=True, help="Show TensorFlow's logs and full tracebacks.")
def export(artifact: str, export_format: str, quantize: str, out: str | None, force: bool, res: tuple | None,
           samples: int, seed: int, atol: float, debug: bool) -> None:
    if quantize != "none" and export_format != "tflite":  # checked before the slow imports
        raise BadInput(f"--quantize {quantize} applies to --format tflite only, got --format {export_format}")
    require_pytorch("export")
    if export_format == "openvino":
        require_package("openvino", "--format openvino", "OpenVINO", "openvino")
    import converter  # noqa: F401  (torch before TensorFlow)
    from converter.export import ExportJob, run_export

    job = ExportJob(
        artifact=artifact, format=export_format, out=out, quantize=quantize, force=force, resolution=res,
        samples=samples, seed=seed, atol=atol, command=shlex.join(["convert.py", *sys.argv[1:]]),
    )
    path, entry = run_export(job, progress=click.echo)
    click.echo(_summary(entry))
    click.echo(f"wrote {path} ({entry['size']:,} bytes, sha256 {entry['sha256'][:16]}…) and its manifest entry")
    if "compile_config" in entry:
        click.echo(f"compile it with {json.dumps(entry['compile_config'])}; parity holds in float32 only")


def _summary(entry: dict) -> str:
    parity = entry["parity"]
    if "logits_max_abs" not in parity:
        worst = max(parity["outputs"].items(), key=lambda item: item[1]["max_abs"])
        return f"parity vs official_ref: worst {worst[0]} {worst[1]['max_abs']:.3e} (atol {parity['atol']:g})"
    figures = (f"logits max abs {parity['logits_max_abs']:.3e}, top-1 agreement {parity['top1_agreement']:.0%}, "
               f"top-5 agreement {parity['top5_agreement']:.0%} over {parity['samples']} inputs")
    gate = f" (atol {parity['atol']:g})" if parity["atol"] is not None else " (not gated)"
    return f"parity vs Keras: {figures}{gate}"
