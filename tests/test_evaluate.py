"""`convert.py evaluate`: accuracies known exactly from the reference's own ranking, in every layout.

The labels are chosen from official_ref's ranking of torchvision's tensors (the independent side):
some images are labelled with its top-1, some with its 3rd class, some with its 100th, so the
expected top-1 and top-5 fractions are known before evaluate runs.
"""

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode

from converter.pipeline import Conversion, convert
from converter.synthetic import save_checkpoint, synthetic_state_dict
from cvt_spec import normalize_spec, variant_spec
from cvt_tf.evaluation import decode
from cvt_tf.evaluation_log import ResultsFileError, ResultsLog
from cvt_tf.imagenet import imagenet_classes
from cvt_tf.preprocessing import EvalTransform
from official_ref import load_reference
from tests.conftest import REPO, tiny_spec
from tests.kill import STRACE
from tests.test_images import png_bytes

SPEC = normalize_spec(tiny_spec())
RES = 48
# Per image: the rank (1-based) of the reference's class that becomes its label.
RANKS = (1, 1, 1, 1, 3, 3, 3, 100, 100)


def torchvision_eval(resolution):
    """The official evaluation transform in torchvision: crop at every square size but 384."""
    normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    if resolution == 384:
        steps = [T.Resize((384, 384), interpolation=InterpolationMode.BICUBIC)]
    else:
        steps = [T.Resize(int(resolution / 0.875), interpolation=InterpolationMode.BICUBIC), T.CenterCrop(resolution)]
    return T.Compose([*steps, T.ToTensor(), normalize])


def _photos():
    """Nine RGB images: scikit-image photos and seeded noise of several sizes, portrait and landscape."""
    rng = np.random.default_rng(0)
    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    photos = [np.asarray(Image.fromarray(p).resize((p.shape[1] // 4, p.shape[0] // 4))) for p in photos]
    photos += [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((70, 50), (50, 90), (64, 64),
                                                                            (33, 77), (120, 60))]
    return [Image.fromarray(p) for p in photos]


def reference_logits(model, images, resolution=RES):
    batch = torch.stack([torchvision_eval(resolution)(image) for image in images])
    with torch.inference_mode():
        return model(batch).numpy()


def image_dependent_head(state, photos, spread=1.0):
    """`state` with its head rescaled and centred on the photos, so their rankings differ image to image.

    A tiny synthetic CvT ranks every image alike (its class token varies little): the head becomes
    k * (W f - mean over the photos of W f), which ranks each photo by its own deviation, k making their
    spread `spread`.
    """
    plain = {**state, "head.bias": np.zeros_like(state["head.bias"])}
    logits = reference_logits(load_reference(SPEC, 1000, plain), photos)
    scale = spread / float(np.std(logits - logits.mean(0)))
    return {**plain, "head.weight": state["head.weight"] * scale,
            "head.bias": (-scale * logits.mean(0)).astype(np.float32)}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny 1000-class artifact at 48, its checkpoint, the photos and their ranking-chosen labels."""
    root = tmp_path_factory.mktemp("evaluate")
    photos = _photos()
    state = image_dependent_head(synthetic_state_dict(SPEC, 1000, seed=0), photos)
    save_checkpoint(state, root / "tiny.pth")
    # The head is scaled about 280x with a bias cancelling the common part, so on the parity check's
    # noise inputs the logits are differences of numbers in the hundreds: their float32 rounding measured
    # 1.22e-4 in a fresh process (it passed 1e-4 in the serial suite, after other tests). The tests below
    # compare both frameworks on the photos, where the top-6 gaps exceed 1e-3.
    convert(Conversion(spec=SPEC, num_classes=1000, resolution=(RES, RES), name="tiny", out_dir=root,
                       checkpoint=root / "tiny.pth", atol=1e-3), progress=lambda _: None)
    logits = reference_logits(load_reference(SPEC, 1000, state), photos)
    order = np.argsort(-logits, axis=1, kind="stable")
    ranked = np.take_along_axis(logits, order, axis=1)
    # No near-tie in the top 6 that a framework's rounding could swap (the top-5 lists are compared whole).
    assert np.min(ranked[:, :5] - ranked[:, 1:6]) > 1e-4
    labels = [int(order[i, rank - 1]) for i, rank in enumerate(RANKS)]
    return {"root": root, "photos": photos, "labels": labels, "order": order}


def expected_accuracy(labels, order):
    return {"top1": float(np.mean([label == row[0] for label, row in zip(labels, order, strict=True)])),
            "top5": float(np.mean([label in row[:5] for label, row in zip(labels, order, strict=True)]))}


def make_set(folder, photos, classes, name_of=str):
    """Each photo saved as PNG in the folder of its class (`name_of(class)`); returns the relative paths."""
    paths = []
    for index, (photo, label) in enumerate(zip(photos, classes, strict=True)):
        path = folder / name_of(label) / "sub" / f"img{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo.save(path)
        paths.append(path.relative_to(folder).as_posix())
    return paths


def run_evaluate(args, capfd):
    """(exit code, stdout, stderr lines) of `convert.py evaluate ARGS` run in this process."""
    from convert_cli.app import run

    try:
        run(["evaluate", *map(str, args)])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capfd.readouterr()
    return code, captured.out, captured.err.splitlines()


def read_rows(csv_path):
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("# cvt-convert evaluate results v1 {")
    return list(csv.DictReader(lines[1:]))


def test_index_folders_with_the_reference_beside(work, tmp_path, capfd):
    """Folders named by their class (2, 10 and 100 among them), both frameworks, a short last batch."""
    root, photos, labels, order = work["root"], work["photos"], work["labels"], work["order"]
    classes = labels[:6] + [2, 10, 100]
    make_set(tmp_path / "data", photos, classes)
    code, out, err = run_evaluate([tmp_path / "data", "--artifact", root / "tiny", "--checkpoint", root / "tiny.pth",
                                   "--batch", 4, "--json", tmp_path / "out.json"], capfd)
    assert (code, err) == (0, [])
    report = json.loads((tmp_path / "out.json").read_text())
    assert list(report) == ["images", "layout", "keras", "reference", "agreement", "max_abs_logits_diff", "skipped"]
    expected = expected_accuracy(classes, order)
    assert expected["top5"] > expected["top1"]  # the 3rd-ranked labels count for top-5 only
    assert report["images"] == 9 and report["layout"] == "imagenet-v2" and report["skipped"] == []
    assert report["keras"] == pytest.approx(expected, abs=1e-12)
    assert report["reference"] == pytest.approx(expected, abs=1e-12)
    assert report["agreement"] == {"top1": 1.0, "top5": 1.0}
    assert 0 < report["max_abs_logits_diff"] < 1e-4
    assert "layout imagenet-v2: its 9 class folders are named by integers" in out
    assert "bicubic resize of the shorter side to 54, center crop 48x48" in out
    assert "Top-1 (Original) | Top-1 (Ported) | Top-5 (Original) | Top-5 (Ported)" in out
    assert "top-1 differs on 0 image(s)" in out
    # The class is int(folder name), never its position ("10" < "100" < "2" when sorted).
    rows = read_rows(tmp_path / "out.csv")
    by_path = {row["path"]: row for row in rows}
    for index, label in enumerate(classes):
        row = by_path[f"{label}/sub/img{index}.png"]
        assert int(row["label"]) == label
        assert row["keras_top5"] == row["reference_top5"] == " ".join(map(str, order[index, :5]))


@pytest.mark.parametrize("layout", ["imagefolder", "labels"])
def test_wordnet_folders_and_a_labels_file_without_the_reference(work, tmp_path, capfd, layout):
    root, photos, labels, order = work["root"], work["photos"], work["labels"], work["order"]
    wnids = [wnid for wnid, _ in imagenet_classes()]
    paths = make_set(tmp_path / "data", photos, labels, name_of=wnids.__getitem__)
    extra = []
    if layout == "labels":
        (tmp_path / "labels.csv").write_text("path,class\n" + "".join(
            f"{path},{label}\n" for path, label in zip(paths, labels, strict=True)))
        extra = ["--labels", tmp_path / "labels.csv"]
    code, out, err = run_evaluate([tmp_path / "data", "--artifact", root / "tiny", "--json", tmp_path / "o.json",
                                   *extra], capfd)
    assert (code, err) == (0, [])
    report = json.loads((tmp_path / "o.json").read_text())
    assert report == {"images": 9, "layout": layout, "keras": pytest.approx(expected_accuracy(labels, order)),
                      "reference": None, "agreement": None, "max_abs_logits_diff": None, "skipped": []}


@pytest.mark.parametrize("resolution", [224, 384])
def test_the_transform_is_torchvisions_224_crop_and_384_resize(work, tmp_path, resolution):
    photo = work["photos"][2]  # astronaut, 128x128
    landscape = photo.resize((150, 97))
    landscape.save(tmp_path / "a.png")
    tensor, reason = decode(tmp_path, "a.png", EvalTransform.official(resolution))
    assert reason is None and tensor.shape == (resolution, resolution, 3)
    expected = torchvision_eval(resolution)(Image.open(tmp_path / "a.png").convert("RGB")).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(tensor, expected)


def test_limit_and_a_refused_second_run_and_a_resume_of_another_data_set(work, tmp_path, capfd):
    root, photos, labels = work["root"], work["photos"], work["labels"]
    make_set(tmp_path / "data", photos, labels)
    args = [tmp_path / "data", "--artifact", root / "tiny", "--json", tmp_path / "o.json"]
    code, out, _ = run_evaluate([*args, "--limit", 4], capfd)
    assert code == 0 and json.loads((tmp_path / "o.json").read_text())["images"] == 4
    first4 = sorted(f"{label}/sub/img{i}.png" for i, label in enumerate(labels))[:4]
    assert [row["path"] for row in read_rows(tmp_path / "o.csv")] == first4
    code, _, err = run_evaluate([*args, "--limit", 4], capfd)
    assert code == 2 and err == [f"error: {tmp_path / 'o.csv'}: holds the results of an earlier run; pass --resume "
                                 "to continue it, or delete it to start again"]
    photos[0].save(tmp_path / "data" / str(labels[0]) / "new.png")  # another data set now
    code, _, err = run_evaluate([*args, "--resume"], capfd)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {tmp_path / 'o.csv'}: the results of another run, not resumed (data_sha256 ")


def test_a_resume_file_of_another_artifact_is_refused_and_a_cut_line_redone(tmp_path):
    fingerprint = {"artifact_sha256": "a" * 64, "data_sha256": "d" * 64, "reference_sha256": None}
    ResultsLog(tmp_path / "r.csv", fingerprint, resume=False)
    with open(tmp_path / "r.csv", "a") as handle:
        handle.write("x.png,3,1 2 3 4 5,,,\ny.png,4,1 2")  # a kill cut the second row
    assert list(ResultsLog(tmp_path / "r.csv", fingerprint, resume=True).done) == ["x.png"]
    assert (tmp_path / "r.csv").read_text().endswith("x.png,3,1 2 3 4 5,,,\n")
    with pytest.raises(ResultsFileError, match=r"another run, not resumed \(artifact_sha256 a+ there, b+ now\)"):
        ResultsLog(tmp_path / "r.csv", {**fingerprint, "artifact_sha256": "b" * 64}, resume=True)


@pytest.mark.skipif(STRACE is None, reason="needs strace (the Makefile installs it)")
def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_result(work, tmp_path, capfd):
    root, photos, labels = work["root"], work["photos"], work["labels"]
    make_set(tmp_path / "data", photos, labels)
    whole = [tmp_path / "data", "--artifact", root / "tiny", "--batch", 2, "--json", tmp_path / "whole.json"]
    assert run_evaluate(whole, capfd)[0] == 0
    cut = [tmp_path / "data", "--artifact", root / "tiny", "--batch", 2, "--json", tmp_path / "cut.json"]
    # fsync 1 is the header's, 2 and 3 the first two batches': SIGKILL as the second batch is flushed.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    strace = [STRACE, "-qq", "-o", os.devnull, "-e", "trace=fsync", "-e", "inject=fsync:signal=KILL:when=3"]
    killed = subprocess.run([*strace, sys.executable, str(REPO / "convert.py"), "evaluate", *map(str, cut)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL or killed.returncode == 128 + signal.SIGKILL, killed.stderr
    assert len(read_rows(tmp_path / "cut.csv")) == 4 and not (tmp_path / "cut.json").exists()
    code, out, _ = run_evaluate([*cut, "--resume"], capfd)
    assert code == 0 and "9 images (4 done in" in out and "5 images computed" in out
    assert (tmp_path / "cut.json").read_text() == (tmp_path / "whole.json").read_text()
    assert read_rows(tmp_path / "cut.csv") == read_rows(tmp_path / "whole.csv")


def test_ctrl_c_exits_130_saying_how_far_and_how_to_resume(work, tmp_path, capfd, monkeypatch):
    import cvt_tf.evaluation

    root, photos, labels = work["root"], work["photos"], work["labels"]
    make_set(tmp_path / "data", photos, labels)
    real, calls = cvt_tf.evaluation.classify_batch, []

    def interrupted_second_time(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(cvt_tf.evaluation, "classify_batch", interrupted_second_time)
    monkeypatch.chdir(tmp_path)  # without --json the per-image CSV goes to ./tiny-evaluate.csv
    code, out, err = run_evaluate([tmp_path / "data", "--artifact", root / "tiny", "--batch", 3], capfd)
    assert (code, err) == (130, ["error: interrupted"])
    assert "interrupted after 3 of 9 images (saved in tiny-evaluate.csv)" in out
    assert len(read_rows(tmp_path / "tiny-evaluate.csv")) == 3
    assert f"resume with: convert.py evaluate {tmp_path / 'data'} --artifact {root / 'tiny'} --layout auto " \
           "--batch 3 --resume" in out


def _bad_images(folder):
    (folder / "bad.jpg").write_bytes(b"not an image at all")
    (folder / "huge.png").write_bytes(png_bytes(10000, 10000, 8, 0))
    Image.fromarray(skimage.data.coffee()).save(folder / "cut.png")
    (folder / "cut.png").write_bytes((folder / "cut.png").read_bytes()[:3000])


def test_unusable_images_are_skipped_with_their_reason_or_refused_with_strict(work, tmp_path, capfd):
    root, photos, labels = work["root"], work["photos"], work["labels"]
    make_set(tmp_path / "data", photos[:2], labels[:2])
    _bad_images(tmp_path / "data" / str(labels[0]))
    args = [tmp_path / "data", "--artifact", root / "tiny", "--json", tmp_path / "o.json"]
    code, out, err = run_evaluate(args, capfd)
    assert (code, err) == (0, [])
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["images"] == 2
    folder = str(labels[0])
    assert [(s["path"], s["reason"].split(" (")[0]) for s in report["skipped"]] == [
        (f"{folder}/bad.jpg", "not an image file PIL can read"),
        (f"{folder}/cut.png", "cannot read the image"),
        (f"{folder}/huge.png", "10000x10000 is 100000000 pixels, more than the limit of 89478485; downscale it first"),
    ]
    assert "truncated" in report["skipped"][1]["reason"]
    assert sum(line.startswith("warning: 3 image(s) skipped") for line in out.splitlines()) == 1
    code, _, err = run_evaluate([*args[:3], "--strict", "--json", tmp_path / "strict.json"], capfd)
    assert code == 2
    assert err == [f"error: --strict: {tmp_path / 'data' / folder / 'bad.jpg'}: not an image file PIL can read"]


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda data: data.mkdir(), [], "{data}: holds no class folders (and no --labels file was given)"),
        (lambda data: (data / "1000").mkdir(parents=True), [],
         "{data}/1000: class 1000 does not exist for a 1000-class head (classes are 0..999)"),
        (lambda data: (data / "cats").mkdir(parents=True), [],
         "{data}: its folders fit no layout: neither all class indices (0, 1, ...) nor all WordNet ids "
         "(n01440764, ...); saw ['cats']; pass --labels FILE for another layout"),
        (lambda data: (data.mkdir(), (data / "l.csv").write_text("path,class\nmissing.png,3\n")),
         ["--labels", "{data}/l.csv"], "{data}/l.csv:2: {data}/missing.png does not exist"),
        (lambda data: (data.mkdir(), Image.new("RGB", (9, 9)).save(data / "a.png"),
                       (data / "l.csv").write_text("a.png,3\na.png,cat\n")),
         ["--labels", "{data}/l.csv"], "{data}/l.csv:2: class 'cat' is not a non-negative integer"),
    ],
    ids=["empty", "class-1000", "no-layout", "labels-missing-file", "labels-not-integer"],
)
def test_bad_data_is_one_error_line_exit_2(work, tmp_path, capfd, make, extra, message):
    data = tmp_path / "data"
    make(data)
    code, _, err = run_evaluate([data, "--artifact", work["root"] / "tiny", *[str(e).format(data=data) for e in extra]],
                                capfd)
    assert (code, err) == (2, ["error: " + message.format(data=data)])


@pytest.mark.slow
def test_full_size_cvt13_at_224_on_photos(tmp_path, capfd):
    spec = variant_spec("cvt-13")
    convert(Conversion(spec=spec, num_classes=1000, resolution=(224, 224), name="cvt-13", out_dir=tmp_path,
                       parity=False), progress=lambda _: None)  # evaluate itself compares the frameworks
    state = synthetic_state_dict(spec, 1000, seed=0)
    save_checkpoint(state, tmp_path / "cvt-13.pth")
    photos = _photos()[:8]
    order = np.argsort(-reference_logits(load_reference(spec, 1000, state), photos, 224), axis=1, kind="stable")
    labels = [int(order[i, rank - 1]) for i, rank in enumerate((1, 1, 3, 3, 3, 100, 100, 100))]
    make_set(tmp_path / "data", photos, labels)
    code, out, err = run_evaluate([tmp_path / "data", "--artifact", tmp_path / "cvt-13", "--checkpoint",
                                   tmp_path / "cvt-13.pth", "--batch", 4, "--json", tmp_path / "o.json"], capfd)
    assert (code, err) == (0, [])
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["keras"] == report["reference"] == {"top1": 0.25, "top5": 0.625}
    assert report["agreement"] == {"top1": 1.0, "top5": 1.0} and report["max_abs_logits_diff"] < 1e-4
