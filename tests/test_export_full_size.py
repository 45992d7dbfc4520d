"""Full-size TFLite export of a synthetic cvt-13 @ 224, float32 and int8, run once (marked slow)."""

import pytest

from converter.export import ExportJob, run_export
from converter.pipeline import Conversion, convert
from cvt_spec import variant_spec


@pytest.mark.slow
def test_cvt13_224_tflite_float32_and_int8(tmp_path):
    job = Conversion(spec=variant_spec("cvt-13"), num_classes=1000, resolution=(224, 224), name="cvt-13",
                     out_dir=tmp_path, configuration="cvt-13")
    weights_path, _, _ = convert(job, progress=lambda _: None)
    float_out, float_entry = run_export(ExportJob(artifact=weights_path, format="tflite"), progress=print)
    int8_out, int8_entry = run_export(ExportJob(artifact=weights_path, format="tflite", quantize="dynamic"),
                                      progress=print)
    assert float_entry["parity"]["logits_max_abs"] < 1e-4
    # int8 weights: about a quarter of the float32 file; the logits move, but not past noise level.
    assert int8_out.stat().st_size < 0.35 * float_out.stat().st_size
    assert 1e-5 < int8_entry["parity"]["logits_max_abs"] < 0.5
    print({"float32": float_entry["parity"], "int8": int8_entry["parity"],
           "bytes": (float_out.stat().st_size, int8_out.stat().st_size)})
