"""`convert.py predict` in subprocesses on real photos: Keras artifact beside the PyTorch reference."""

import re

import pytest
import skimage.data
import torch
from PIL import Image
from torchvision.models._meta import _IMAGENET_CATEGORIES

from converter.pipeline import Conversion, convert
from converter.synthetic import save_checkpoint, synthetic_state_dict
from cvt_spec import normalize_spec
from official_ref import load_reference
from tests.conftest import run_cli, tiny_spec
from tests.test_images import png_bytes
from tests.test_preprocessing import official_transform

SPEC = normalize_spec(tiny_spec())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Tiny 1000-class artifacts at 224 and 384, their synthetic checkpoint, and photos in several modes."""
    root = tmp_path_factory.mktemp("predict")
    for resolution in (224, 384):
        job = Conversion(spec=SPEC, num_classes=1000, resolution=(resolution, resolution),
                         name=f"tiny-{resolution}", out_dir=root)
        convert(job, progress=lambda _: None)
    save_checkpoint(synthetic_state_dict(SPEC, 1000, seed=0), root / "tiny.pth")
    save_checkpoint(synthetic_state_dict(SPEC, 1000, seed=1), root / "other.pth")
    Image.fromarray(skimage.data.chelsea()).save(root / "chelsea.jpg", quality=95)
    Image.fromarray(skimage.data.coffee()).convert("L").save(root / "coffee-gray.png")
    Image.fromarray(skimage.data.astronaut()).convert("RGBA").save(root / "astronaut-rgba.png")
    Image.fromarray(skimage.data.rocket()).convert("P").save(root / "rocket-palette.png")
    return root


PHOTO_FILES = ("chelsea.jpg", "coffee-gray.png", "astronaut-rgba.png", "rocket-palette.png")


def official_top1(workdir, files, resolution):
    """Class names of the top-1 per file: PIL convert("RGB"), torchvision transform, official_ref."""
    model = load_reference(SPEC, 1000, synthetic_state_dict(SPEC, 1000, seed=0))
    batch = torch.stack([official_transform(resolution)(Image.open(workdir / f).convert("RGB")) for f in files])
    with torch.inference_mode():
        return [_IMAGENET_CATEGORIES[i] for i in model(batch).argmax(dim=1).tolist()]


def image_blocks(stdout):
    """{file: [lines of its table and verdict]} from the predict output."""
    blocks = {}
    for block in stdout.split("\n\n")[1:]:
        header, *lines = block.strip().splitlines()
        blocks[header.split(" (")[0]] = [header, *lines]
    return blocks


def top1_cells(block):
    """The class names in rank 1's row, one per framework column."""
    row = next(line for line in block if line.startswith("  1  "))
    return [re.match(r"n\d{8} (.+?)\s+\d+\.\d\d%", cell.strip()).group(1) for cell in row[5:].split(" | ")]


def test_predict_matches_the_reference_on_real_photos(workdir):
    result = run_cli("predict", *PHOTO_FILES, "--artifact", "tiny-224", "--checkpoint", "tiny.pth", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "preprocessing: bicubic resize of the shorter side to 256, center crop 224x224" in out
    assert "pytorch: tiny.pth is the artifact's source checkpoint" in out
    blocks = image_blocks(out)
    assert list(blocks) == list(PHOTO_FILES)
    assert "L converted to RGB as the official loader does" in blocks["coffee-gray.png"][0]
    assert "RGBA converted to RGB as the official loader does, alpha dropped" in blocks["astronaut-rgba.png"][0]
    expected = official_top1(workdir, PHOTO_FILES, 224)
    for name, top1 in zip(PHOTO_FILES, expected, strict=True):
        block = blocks[name]
        assert top1_cells(block) == [top1, top1], name
        verdict = block[-1]
        assert verdict.endswith("top-1 agrees; top-5 agrees (same classes, same order)"), verdict
        assert float(re.search(r"logits max abs diff (\S+);", verdict).group(1)) < 1e-5


def invoke(workdir, *args):
    """`convert.py predict ARGS` in this process (fast); exit codes as in a subprocess."""
    from click.testing import CliRunner

    from convert_cli.app import main

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        return CliRunner().invoke(main, ["predict", *map(str, args)])


def test_predict_without_checkpoint_at_384(workdir):
    files = ("rocket-palette.png", "chelsea.jpg")
    result = invoke(workdir, *files, "--artifact", "tiny-384.weights.h5", "--top", 3)
    assert result.exit_code == 0, result.output
    assert "preprocessing: bicubic resize to 384x384, no crop" in result.output
    assert "pytorch" not in result.output
    blocks = image_blocks(result.output)
    for name, top1 in zip(files, official_top1(workdir, files, 384), strict=True):
        assert top1_cells(blocks[name]) == [top1]
        assert sum(line[:5].strip().isdigit() for line in blocks[name]) == 3


def test_predict_with_other_weights_fails_parity(workdir):
    result = invoke(workdir, "chelsea.jpg", "--artifact", "tiny-224.json", "--checkpoint", "other.pth")
    assert result.exit_code == 1
    assert "NOT the artifact's source checkpoint" in result.output and "top-5 DIFFERS" in result.output
    assert "parity failed: Keras and PyTorch logits differ by " in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["chelsea.jpg", "--artifact", "nothing"], "--artifact: nothing.weights.h5: artifact file not found"),
        (["chelsea.jpg", "--artifact", "tiny-224", "--checkpoint", "chelsea.jpg"], "chelsea.jpg: not a readable torch"),
    ],
)
def test_bad_artifact_or_checkpoint_exits_2(workdir, args, fragment):
    result = invoke(workdir, *args)
    assert result.exit_code == 2 and fragment in result.output, result.output


def test_bad_images_are_listed_in_one_line(workdir, tmp_path):
    (tmp_path / "text.jpg").write_text("not a picture")
    jpeg = (workdir / "chelsea.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "deep-gray.png").write_bytes(png_bytes(2, 2, 16, 0, [b"\1\0\2\0", b"\3\0\4\0"]))
    (tmp_path / "huge.png").write_bytes(png_bytes(10_000, 10_000, 1, 0))
    bad = ["text.jpg", "cut.jpg", "deep-gray.png", "huge.png", "missing.png"]
    result = run_cli("predict", str(workdir / "chelsea.jpg"), *bad, "--artifact", workdir / "tiny-224", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: 5 of 6 images cannot be used: text.jpg: not an image file PIL can read; ")
    for fragment in ("cut.jpg: cannot read the image (image file is truncated", "deep-gray.png: single-channel",
                     "huge.png: 10000x10000 is 100000000 pixels", "missing.png: no such file"):
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--artifact", "tiny-224"], "Missing argument 'IMAGES...'"),
        (["chelsea.jpg", "--artifact", "tiny-224", "--top", "0"], "--top"),
        (["chelsea.jpg", "--artifact", "tiny-224", "--atol", "0"], "--atol"),
    ],
)
def test_bad_options_are_one_line(workdir, args, fragment):
    result = run_cli("predict", *args, cwd=workdir)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and fragment in result.stderr


def test_checkpoint_of_another_model_is_refused_in_one_line(workdir):
    from convert_cli.predict import official_reference
    from converter.layout import LayoutError
    from cvt_spec.artifacts import read_manifest

    other = normalize_spec(tiny_spec(DIM_EMBED=[16, 32, 64], NUM_HEADS=[1, 2, 4]))
    save_checkpoint(synthetic_state_dict(other, 1000), workdir / "wider.pth")
    with pytest.raises(LayoutError, match=r"wider.pth: checkpoint does not fit the artifact's SPEC and 1000-class "
                       r"head \(\d+ shape mismatch\): shape mismatch: stage2.cls_token is \(1, 1, 64\), "
                       r"expected \(1, 1, 48\); "):
        official_reference(read_manifest(workdir / "tiny-224"), workdir / "wider.pth")
