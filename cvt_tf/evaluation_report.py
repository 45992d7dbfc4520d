"""What `convert.py evaluate` reports: accuracies of both frameworks, their agreement, the JSON and the table.

Computed from the per-image results alone, so a resumed run reports what an uninterrupted one does.
"""

from dataclasses import dataclass

from cvt_tf.evaluation_log import ImageResult

# The size of the ImageNet-1k validation set, the one the published figures are measured on.
IMAGENET_VAL_IMAGES = 50_000


def _fraction(hits: int, total: int) -> float:
    return hits / total if total else 0.0


@dataclass(frozen=True)
class Summary:
    results: tuple  # ImageResult per image, skipped ones included
    layout: str

    @property
    def used(self) -> list[ImageResult]:
        return [result for result in self.results if result.skipped is None]

    @property
    def has_reference(self) -> bool:
        return bool(self.used) and self.used[0].reference_top5 is not None

    def accuracy(self, framework: str) -> dict:
        """{"top1": fraction, "top5": fraction} of `keras` or `reference`."""
        tops = [(getattr(result, f"{framework}_top5"), result.label) for result in self.used]
        return {"top1": _fraction(sum(top[0] == label for top, label in tops), len(tops)),
                "top5": _fraction(sum(label in top for top, label in tops), len(tops))}

    def agreement(self) -> dict:
        """Fractions of images whose top-1 class, and whose set of top-5 classes, both frameworks share."""
        used = self.used
        return {"top1": _fraction(sum(r.keras_top5[0] == r.reference_top5[0] for r in used), len(used)),
                "top5": _fraction(sum(set(r.keras_top5) == set(r.reference_top5) for r in used), len(used))}

    def max_abs_logits_diff(self) -> float:
        return max(result.max_abs_diff for result in self.used)

    def top1_differs(self) -> list[ImageResult]:
        return [r for r in self.used if r.reference_top5 is not None and r.keras_top5[0] != r.reference_top5[0]]

    def skipped(self) -> list[dict]:
        return [{"path": r.path, "reason": r.skipped} for r in self.results if r.skipped is not None]

    def to_json(self) -> dict:
        """Exactly the keys the issue promises; accuracies as fractions, null where there is no reference."""
        reference = self.has_reference
        return {
            "images": len(self.used),
            "layout": self.layout,
            "keras": self.accuracy("keras"),
            "reference": self.accuracy("reference") if reference else None,
            "agreement": self.agreement() if reference else None,
            "max_abs_logits_diff": self.max_abs_logits_diff() if reference else None,
            "skipped": self.skipped(),
        }

    def table(self, name: str, published_top1: float | None = None) -> str:
        """The earlier TensorFlow port's table (accuracies in %), one row for the artifact."""
        keras = self.accuracy("keras")
        reference = self.accuracy("reference") if self.has_reference else None

        def cell(accuracy, key):
            return "-" if accuracy is None else f"{100 * accuracy[key]:.2f}"

        largest = "-" if reference is None else f"{100 * max(abs(keras[k] - reference[k]) for k in keras):.2f}"
        header = ["Model", "Images", "Top-1 (Original)", "Top-1 (Ported)", "Top-5 (Original)", "Top-5 (Ported)",
                  "Largest metric difference"]
        row = [name, str(len(self.used)), cell(reference, "top1"), cell(keras, "top1"), cell(reference, "top5"),
               cell(keras, "top5"), largest]
        if published_top1 is not None and len(self.results) == IMAGENET_VAL_IMAGES:
            header.append("Top-1 (published)")
            row.append(f"{published_top1:.1f}")
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
                 "| " + " | ".join(row) + " |"]
        return "\n".join(lines)

    def lines(self) -> list[str]:
        """The lines under the table: agreement, logits difference, and each image whose top-1 differs."""
        if not self.has_reference:
            return ["no --checkpoint: the Keras artifact alone (pass the official .pth for the Original columns)"]
        agreement = self.agreement()
        out = [f"top-1 agreement {100 * agreement['top1']:.2f} %, top-5 set agreement {100 * agreement['top5']:.2f} %;"
               f" max abs logits diff {self.max_abs_logits_diff():.3e}"]
        differs = self.top1_differs()
        out.append(f"top-1 differs on {len(differs)} image(s)" + (":" if differs else ""))
        out += [f"  {r.path}: keras {r.keras_top5[0]}, pytorch {r.reference_top5[0]} (label {r.label})"
                for r in differs]
        return out
