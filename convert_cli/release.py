"""`convert.py --all`: every official checkpoint in checkpoints/ (or all seven synthetic) in one run.

Prints each conversion, then one summary table, and writes OUT/SHA256SUMS.
"""

import click

from convert_cli.errors import BadInput, ParityFailed
from convert_cli.inputs import require_pytorch
from convert_cli.plan import DEFAULT_CHECKPOINT_DIR
from cvt_spec import OFFICIAL_CHECKPOINTS, PUBLISHED_AT, locate_official

# Options that choose one model or one name; --all takes both from the official list.
SINGLE_CONVERSION_OPTIONS = ("config", "spec", "checkpoint", "name", "res", "num_classes", "version", "show_mapping")


def release_command(options: dict, command: str) -> None:
    """Runs --all from the parsed CLI options; exit 1 if any parity failed, 2 if a checkpoint was bad."""
    given = [f"--{key.replace('_', '-')}" for key in SINGLE_CONVERSION_OPTIONS if options[key] not in (None, False)]
    if given:
        raise BadInput(f"--all converts the official checkpoints under their own names; drop {', '.join(given)}")
    found, missing = locate_official(DEFAULT_CHECKPOINT_DIR)
    if not found and not options["synthetic"]:  # checked before TensorFlow and PyTorch load
        raise BadInput(
            f"none of the {len(OFFICIAL_CHECKPOINTS)} official checkpoints is in {DEFAULT_CHECKPOINT_DIR}/ "
            f"(e.g. {missing[0].name}; see {PUBLISHED_AT}); try --all --synthetic"
        )
    require_pytorch("--all")
    from converter.memory import prefer_returning_memory
    from converter.release import official_jobs, run_release, summary_table, write_sha256sums

    prefer_returning_memory()

    jobs, missing = official_jobs(
        DEFAULT_CHECKPOINT_DIR, options["out"], options["synthetic"],
        seed=options["seed"], atol=options["atol"], parity=not options["no_parity"], command=command,
    )
    outcomes = run_release(jobs, progress=click.echo)
    click.echo(summary_table(outcomes))
    sums = write_sha256sums(options["out"], outcomes)
    if sums is not None:
        click.echo(f"wrote {sums}")
    if missing:
        click.echo(f"missing from {DEFAULT_CHECKPOINT_DIR}/, not converted: {', '.join(p.name for p in missing)}")
    failed_parity = [o.name for o in outcomes if o.report is not None and not o.report.passed]
    if failed_parity:
        raise ParityFailed(f"parity failed for {', '.join(failed_parity)}; nothing written for them")
    refused = [o.name for o in outcomes if o.error]
    if refused:
        raise BadInput(f"checkpoints refused for {', '.join(refused)} (reasons above); nothing written for them")
