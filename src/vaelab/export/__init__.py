"""Export: a model's encoder and decoder leave vaelab as ONNX or TorchScript files.

`export_model(model_or_run_dir, out_dir, format="onnx", part="both")` writes encoder.onnx and
decoder.onnx (or encoder.pt and decoder.pt) and export-FORMAT.json, each file checked against
PyTorch on random inputs. The contract of the files is in `vaelab.export.parts`; ONNX needs the
``vaelab[export]`` extra (onnx, onnxruntime, onnxscript), TorchScript only torch.
"""

from vaelab.export.files import CHECK_BATCHES, TOLERANCE, export_model, record_name
from vaelab.export.formats import FORMATS, SUFFIXES
from vaelab.export.parts import PART_CHOICES, PARTS, Decoder, Encoder

__all__ = [
    "CHECK_BATCHES", "Decoder", "Encoder", "FORMATS", "PARTS", "PART_CHOICES", "SUFFIXES",
    "TOLERANCE", "export_model", "record_name",
]  # fmt: skip
