"""Export: ONNX and TorchScript files give what PyTorch gives, for every architecture and
likelihood, at any batch size; the files are written atomically with their record, an earlier
export is not replaced silently, and docs/export.md's onnxruntime snippet runs."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vaelab
from tests.bad_input_cases import saved_run
from tests.helpers import run_vaelab
from vaelab import export as export_module
from vaelab.config import GAUSSIAN_LIKELIHOODS, LIKELIHOODS, ModelConfig
from vaelab.errors import MissingExtra, VaelabError
from vaelab.export import export_model
from vaelab.export import files as export_files
from vaelab.models import VAE
from vaelab.rundir import weights_sha256

pytest.importorskip("onnxruntime")
import onnxruntime  # noqa: E402

# torch.jit.load warns that TorchScript is deprecated; reading the files is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"
TOLERANCE = 1e-5
# Shapes of the tiny models: a non-square grey MLP, a square grey and a non-square RGB conv net.
MLP = {"arch": "mlp", "input_dim": 15, "image_shape": (1, 3, 5), "hidden": (8, 4)}
CONV_GREY = {"arch": "conv", "input_dim": 16, "image_shape": (1, 4, 4), "hidden": (2, 3, 5)}
CONV_RGB = {"arch": "conv", "input_dim": 105, "image_shape": (3, 5, 7), "hidden": (4, 6, 8)}


def tiny_model(shape: dict, likelihood: str = "bernoulli", latent_dim: int = 3) -> VAE:
    """A seeded untrained VAE; Gaussian scales moved off zero so that they matter."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(**shape, likelihood=likelihood, latent_dim=latent_dim))
    if likelihood in GAUSSIAN_LIKELIHOODS:
        with torch.no_grad():
            model.log_scale.uniform_(-1, 1)
    return model.eval()


def onnx_outputs(path: Path, inputs: torch.Tensor) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})


def torchscript_outputs(path: Path, inputs: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = torch.jit.load(str(path))(inputs)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


RUNNERS = {"onnx": (onnx_outputs, ".onnx"), "torchscript": (torchscript_outputs, ".pt")}


def max_difference(model: VAE, out: Path, format: str, batch: int) -> float:
    """|file - PyTorch| at its largest over both parts, for a batch of `batch` new inputs."""
    run, suffix = RUNNERS[format]
    generator = torch.Generator().manual_seed(123)
    x = torch.rand(batch, model.config.input_dim, generator=generator)
    z = 3 * torch.randn(batch, model.config.latent_dim, generator=generator)
    with torch.no_grad():
        expected = [*model.encode(x), model.decode(z)]
    got = [*run(out / f"encoder{suffix}", x), *run(out / f"decoder{suffix}", z)]
    assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))


def every_model() -> list:
    """Each architecture x likelihood x format. An ONNX export takes seconds: each likelihood is
    exported to ONNX once by the fast tests (architectures taking turns), the rest are slow."""
    cases = []
    for index, likelihood in enumerate(LIKELIHOODS):
        for turn, (name, shape) in enumerate((("mlp-1x3x5", MLP), ("conv-3x5x7", CONV_RGB))):
            for format in ("onnx", "torchscript"):
                slow = format == "onnx" and (index + turn) % 2 == 1
                cases.append(pytest.param(
                    shape, likelihood, format, id=f"{name}-{likelihood}-{format}",
                    marks=[pytest.mark.slow] if slow else [],
                ))  # fmt: skip
    return cases


class TestEveryModelExports:
    @pytest.mark.parametrize(("shape", "likelihood", "format"), every_model())
    def test_files_give_what_pytorch_gives(self, shape, likelihood, format, tmp_path):
        model = tiny_model(shape, likelihood)
        export_model(model, tmp_path, format=format)
        assert max_difference(model, tmp_path, format, batch=5) < TOLERANCE

    @pytest.mark.parametrize("format", ["onnx", "torchscript"])
    def test_a_square_grey_conv_model_exports(self, format, tmp_path):
        model = tiny_model(CONV_GREY, "continuous-bernoulli", latent_dim=2)
        export_model(model, tmp_path, format=format)
        assert max_difference(model, tmp_path, format, batch=4) < TOLERANCE

    @pytest.mark.parametrize("format", ["onnx", "torchscript"])
    def test_any_batch_size_runs_though_the_export_traced_another(self, format, tmp_path):
        model = tiny_model(CONV_RGB, "gaussian")
        export_model(model, tmp_path, format=format)
        assert export_files.TRACE_BATCH not in (1, 33)
        for batch in (1, 33):
            assert max_difference(model, tmp_path, format, batch) < TOLERANCE

    def test_the_onnx_batch_axis_is_symbolic_and_named(self, tmp_path):
        export_model(tiny_model(MLP), tmp_path)
        session = onnxruntime.InferenceSession(
            str(tmp_path / "decoder.onnx"), providers=["CPUExecutionProvider"]
        )
        assert [(i.name, i.shape) for i in session.get_inputs()] == [("z", ["batch", 3])]
        assert [(o.name, o.shape) for o in session.get_outputs()] == [("x_mean", ["batch", 15])]


class TestWhatIsWritten:
    def test_the_record_describes_the_files_and_the_source_run(self, tmp_path):
        run = saved_run(tmp_path)
        paths = export_model(run, tmp_path / "out")
        out = tmp_path / "out"
        assert paths == [out / "encoder.onnx", out / "decoder.onnx", out / "export-onnx.json"]
        record = json.loads((out / "export-onnx.json").read_text())
        assert record["weights_sha256"] == weights_sha256(run)
        assert record["source_run"] == str(run)
        assert record["vaelab_version"] == vaelab.__version__
        assert (record["input_dim"], record["latent_dim"], record["image_shape"]) == (
            16,
            2,
            [1, 4, 4],
        )
        encoder, decoder = record["parts"]["encoder"], record["parts"]["decoder"]
        assert [t["name"] for t in encoder["inputs"] + encoder["outputs"]] == ["x", "mu", "logvar"]
        assert decoder["inputs"][0]["shape"] == ["batch", 2]
        assert decoder["outputs"][0] == {
            "name": "x_mean",
            "shape": ["batch", 16],
            "dtype": "float32",
        }
        assert 0 <= encoder["max_abs_difference"] < TOLERANCE
        assert isinstance(record["onnx_opset"], int)

    def test_one_part_writes_only_that_part(self, tmp_path):
        paths = export_model(tiny_model(MLP), tmp_path, format="torchscript", part="decoder")
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            ".vaelab-outputs.json",
            "decoder.pt",
            "export-torchscript.json",
        ]
        assert paths == [tmp_path / "decoder.pt", tmp_path / "export-torchscript.json"]

    def test_the_max_difference_is_printed(self, tmp_path):
        lines: list[str] = []
        export_model(tiny_model(MLP), tmp_path, format="torchscript", log=lines.append)
        assert re.fullmatch(
            r"wrote .*encoder\.pt \(max abs difference from PyTorch \S+\)", lines[0]
        )
        assert lines[-1] == f"wrote {tmp_path / 'export-torchscript.json'}"

    def test_the_callers_model_is_left_as_it_was(self, tmp_path):
        model = tiny_model(MLP).train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        export_model(model, tmp_path, format="torchscript")
        assert model.training
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    def test_the_api_names_it_at_the_top_level(self):
        assert vaelab.export_model is export_model
        assert "export_model" in vaelab.__all__


class TestRefusals:
    def test_an_earlier_export_is_refused_without_overwrite(self, tmp_path):
        export_model(tiny_model(MLP), tmp_path, format="torchscript")
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        with pytest.raises(VaelabError, match="encoder.pt: already exists; pass overwrite=True"):
            export_model(tiny_model(CONV_RGB), tmp_path, format="torchscript")
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    def test_overwrite_replaces_the_earlier_export(self, tmp_path):
        export_model(tiny_model(MLP), tmp_path, format="torchscript")
        export_model(tiny_model(CONV_RGB), tmp_path, format="torchscript", overwrite=True)
        record = json.loads((tmp_path / "export-torchscript.json").read_text())
        assert record["image_shape"] == [3, 5, 7]
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            ".vaelab-outputs.json", "decoder.pt", "encoder.pt", "export-torchscript.json",
        ]  # fmt: skip

    def test_a_difference_above_the_tolerance_fails_and_writes_nothing(self, tmp_path, monkeypatch):
        monkeypatch.setattr(export_files, "TOLERANCE", -1.0)
        with pytest.raises(
            VaelabError, match="differs from PyTorch by up to .*nothing was written"
        ):
            export_model(tiny_model(MLP), tmp_path / "out", format="torchscript")
        assert not (tmp_path / "out").exists()

    def test_a_failure_leaves_an_existing_folder_without_temporary_files(
        self, tmp_path, monkeypatch
    ):
        monkeypatch.setattr(export_files, "TOLERANCE", -1.0)
        with pytest.raises(VaelabError):
            export_model(tiny_model(MLP), tmp_path, format="torchscript")
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"format": "tflite"}, "format must be one of onnx, torchscript, got 'tflite'"),
            ({"part": "head"}, "part must be one of encoder, decoder, both, got 'head'"),
        ],
    )
    def test_an_unknown_format_or_part_is_refused(self, options, message, tmp_path):
        with pytest.raises(VaelabError, match=message):
            export_model(tiny_model(MLP), tmp_path / "out", **options)
        assert not (tmp_path / "out").exists()

    def test_something_else_than_a_model_is_refused(self, tmp_path):
        with pytest.raises(VaelabError, match="expected a VAE or a run directory, got dict"):
            export_model({}, tmp_path)  # type: ignore[arg-type]

    def test_onnx_without_the_extra_names_it_and_torchscript_still_works(
        self, tmp_path, monkeypatch
    ):
        monkeypatch.setitem(sys.modules, "onnxscript", None)
        with pytest.raises(MissingExtra, match=r"onnxscript.*pip install 'vaelab\[export\]'"):
            export_model(tiny_model(MLP), tmp_path / "onnx")
        assert not (tmp_path / "onnx").exists()
        export_model(tiny_model(MLP), tmp_path / "ts", format="torchscript")


def test_the_docs_onnxruntime_snippet_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    snippet = next(block for block in blocks if "onnxruntime" in block)
    assert len(snippet.strip().splitlines()) <= 11
    model = tiny_model(CONV_RGB, "continuous-bernoulli")
    export_model(model, tmp_path / "export")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, str(DOCS), "exec"), scope)
    assert scope["images"].shape == (5, 3, 5, 7)
    mu, _ = model.encode(torch.from_numpy(scope["x"]))
    assert np.abs(scope["mu"] - mu.detach().numpy()).max() < TOLERANCE
    assert np.abs(scope["x_mean"] - model.decode(mu).detach().numpy()).max() < TOLERANCE


@pytest.mark.slow
def test_the_command_exports_a_run_and_prints_the_differences(tmp_path):
    saved_run(tmp_path)
    result = run_vaelab("export", "runs/old", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3, result.stdout
    for line, name in zip(lines, ("encoder.onnx", "decoder.onnx")):
        match = re.fullmatch(rf"wrote out/{name} \(max abs difference from PyTorch (\S+)\)", line)
        assert match and float(match.group(1)) < TOLERANCE, line
    assert lines[2] == "wrote out/export-onnx.json"
    assert result.stderr == ""
    again = run_vaelab("export", "runs/old", "--out", "out", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        "vaelab: error: out/encoder.onnx: already exists; pass --overwrite to replace it (an "
        "export file vaelab wrote)"
    )
    assert export_module.FORMATS == ("onnx", "torchscript")
