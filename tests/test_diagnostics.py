"""The posterior-collapse diagnosis: what it measures, when it flags a model, and where it is said
(after training, in `vaelab evaluate`, the report and the compare page)."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import make_tiny_dataset, synthetic_images
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.diagnostics import (
    ACTIVE_VARIANCE,
    PosteriorDiagnosis,
    collapse_warning,
    diagnose_posterior,
    few_steps_note,
    recorded_posterior,
)
from vaelab.errors import VaelabError
from vaelab.models import VAE, HierarchicalVAE
from vaelab.rundir import weights_sha256
from vaelab.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_model(**config) -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(**{"input_dim": 16, "hidden": (16, 8), "latent_dim": 3, **config}))


def two_classes(count: int = 64) -> torch.Tensor:
    images, _ = synthetic_images(count, seed=3)
    return torch.from_numpy(images.reshape(count, -1)).float() / 255


def encoder_outputs_the_prior(model: VAE) -> VAE:
    """`model` with q(z|x) = N(0, I) for every image: its code carries nothing."""

    def encode(x, labels=None):
        zeros = x.new_zeros(len(x), model.config.latent_dim)
        return zeros, zeros

    model.encode = encode
    return model


def decoder_ignores_z(model: VAE) -> VAE:
    """`model` whose decoder draws the same image whatever z is (its output layer's weights 0)."""
    with torch.no_grad():
        model.output.weight.zero_()
    return model


def learned(epochs: int = 30) -> tuple[VAE, torch.Tensor]:
    """A model trained on two classes of 4x4 images (which half is bright), and its test set."""
    config = RunConfig(
        model=ModelConfig(hidden=(16, 8), latent_dim=2),
        train=TrainConfig(epochs=epochs, batch_size=16, lr=3e-3, device="cpu", precision="32"),
    )
    dataset = make_tiny_dataset()
    result = train(config, dataset, log=None)
    return result.model, dataset.test_images.tensor()


class TestMeasures:
    def test_the_per_dimension_kl_sums_to_the_closed_form_kl(self):
        model, x = random_model(), two_classes()
        diagnosis = diagnose_posterior(model, x, batch_size=10)
        assert diagnosis.images == 64 and len(diagnosis.kl_per_dim) == 3
        with torch.no_grad():
            expected = model.kl_divergence(x).mean().item()
        assert diagnosis.kl_nats == pytest.approx(expected, rel=1e-6)

    def test_active_units_count_dimensions_whose_posterior_mean_varies(self):
        model, x = random_model(), two_classes()
        with torch.no_grad():
            mu = model.encode(x)[0].double()
        variance = mu.var(0, unbiased=False)
        diagnosis = diagnose_posterior(model, x, batch_size=7)
        assert diagnosis.mean_variance_per_dim == pytest.approx(variance.tolist(), rel=1e-6)
        assert diagnosis.active_units == int((variance > ACTIVE_VARIANCE).sum())

    def test_the_spreads_are_the_per_pixel_variance_across_images_of_outputs_and_inputs(self):
        model, x = random_model(), two_classes()
        with torch.no_grad():
            outputs = model.decode(model.encode(x)[0]).double()
        diagnosis = diagnose_posterior(model, x, batch_size=9)
        spread = outputs.var(0, unbiased=False).mean().item()
        assert diagnosis.reconstruction_spread == pytest.approx(spread, rel=1e-6)
        assert diagnosis.data_spread == pytest.approx(x.double().var(0, unbiased=False).mean())

    def test_a_mixture_prior_of_one_standard_normal_gives_the_closed_form_kl(self):
        model = random_model(prior="mog", components=1)
        with torch.no_grad():
            model.prior.means.zero_()
            model.prior.logvars.zero_()
        x = two_classes()
        sampled = diagnose_posterior(model, x).kl_per_dim
        with torch.no_grad():
            mu, logvar = model.encode(x)
            closed = (-0.5 * (1 + logvar - mu.square() - logvar.exp())).mean(0)
        assert sampled == pytest.approx(closed.tolist(), abs=0.05)

    def test_a_two_layer_model_is_measured_in_both_latents(self):
        torch.manual_seed(0)
        model = HierarchicalVAE(ModelConfig(input_dim=16, hidden=(16, 8), latent_dim=2,
                                            stochastic_layers=2))  # fmt: skip
        diagnosis = diagnose_posterior(model, two_classes())
        assert len(diagnosis.kl_per_dim) == len(diagnosis.mean_variance_per_dim) == 4
        assert all(math.isfinite(kl) and kl >= 0 for kl in diagnosis.kl_per_dim)

    def test_no_images_or_an_empty_batch_is_refused(self):
        with pytest.raises(VaelabError, match="no images to diagnose"):
            diagnose_posterior(random_model(), torch.zeros(0, 16))
        with pytest.raises(VaelabError, match="batch_size must be at least 1, got 0"):
            diagnose_posterior(random_model(), two_classes(), batch_size=0)

    def test_the_figures_round_trip_through_json_and_damaged_records_are_none(self):
        diagnosis = diagnose_posterior(random_model(), two_classes())
        record = json.loads(json.dumps(diagnosis.to_dict()))
        assert PosteriorDiagnosis.from_dict(record) == diagnosis
        assert record["active_units"] == diagnosis.active_units
        assert record["collapsed"] is diagnosis.collapsed
        for damaged in (None, [], {"images": 3}, {**record, "kl_per_dim": [1.0]},
                        {**record, "data_spread": "x"}, {**record, "images": 2.5}):  # fmt: skip
            assert PosteriorDiagnosis.from_dict(damaged) is None


class TestFlag:
    def test_an_encoder_that_outputs_the_prior_is_flagged(self):
        model = encoder_outputs_the_prior(random_model())
        diagnosis = diagnose_posterior(model, two_classes())
        assert diagnosis.active_units == 0
        assert diagnosis.kl_per_dim == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
        assert diagnosis.reconstruction_spread == pytest.approx(0.0, abs=1e-12)
        assert diagnosis.collapsed

    def test_a_decoder_that_ignores_z_is_flagged_though_its_code_varies(self):
        model = decoder_ignores_z(random_model())
        model.encode = lambda x, labels=None: (4 * x[:, :3], torch.zeros_like(x[:, :3]))
        diagnosis = diagnose_posterior(model, two_classes())
        assert diagnosis.active_units == 3 and diagnosis.kl_nats > 1
        assert diagnosis.outputs_alike and diagnosis.collapsed
        assert "the reconstructions are nearly all the same image" in str(
            collapse_warning(diagnosis)
        )

    def test_a_model_trained_on_separable_data_is_not_flagged(self):
        model, test = learned()
        diagnosis = diagnose_posterior(model, test)
        assert diagnosis.active_units >= 1 and diagnosis.spread_ratio > 0.5
        assert not diagnosis.collapsed and collapse_warning(diagnosis) is None

    def test_identical_images_are_not_called_a_collapse_of_the_outputs(self):
        model = random_model()
        diagnosis = diagnose_posterior(model, torch.full((8, 16), 0.5))
        assert diagnosis.data_spread == 0 and math.isnan(diagnosis.spread_ratio)
        assert not diagnosis.outputs_alike

    def test_the_warning_is_one_line_with_the_figures_causes_and_steps(self):
        diagnosis = diagnose_posterior(encoder_outputs_the_prior(random_model()), two_classes())
        warning = collapse_warning(diagnosis, steps_per_epoch=8, epochs=60)
        assert warning is not None and "\n" not in warning
        assert warning.startswith("warning: posterior collapse: 0 of 3 latent dimensions active")
        assert "8 per epoch, 480 in all" in warning
        for cause in ("KL warm-up", "learning rate", "beta", "more epochs"):
            assert cause in warning
        assert "tutorial-mse" not in warning
        assert "tutorial-mse is a Gaussian of variance 1" in str(
            collapse_warning(diagnosis, likelihood="tutorial-mse")
        )


@pytest.mark.slow
def test_the_tutorials_model_is_not_flagged_after_a_few_hundred_steps_on_fashion_mnist(
    fashion_mnist,
):
    config = RunConfig(train=TrainConfig(epochs=3, batch_size=50, device="cpu", precision="32"))
    train_images = fashion_mnist.train_images[:6000].reshape(-1, 28, 28)
    test_images = fashion_mnist.test_images[:1000].reshape(-1, 28, 28)
    lines: list[str] = []
    result = train(config, data=train_images, test_data=test_images, log=lines.append)
    assert result.posterior is not None and result.posterior.active_units == 2
    assert result.posterior.spread_ratio > 0.3 and not result.posterior.collapsed
    assert not any(line.startswith(("note: ", "warning: ")) for line in lines)


class TestFewSteps:
    def test_an_epoch_of_a_handful_of_steps_is_noted_with_the_steps(self):
        note = few_steps_note(1617, 200, 60)
        assert note is not None and "\n" not in note
        assert "only 8 optimizer steps (1,617 training images in batches of 200)" in note
        assert "480 steps in all" in note and "thousands of steps" in note

    def test_long_epochs_or_many_steps_in_all_are_not_noted(self):
        assert few_steps_note(60_000, 200, 60) is None  # 300 steps per epoch
        assert few_steps_note(1617, 200, 1000) is None  # 8,000 steps in all

    def test_training_notes_few_steps_and_warns_when_the_posterior_collapsed(self, monkeypatch):
        monkeypatch.setattr(VAE, "encode", lambda self, x, labels=None: (
            x.new_zeros(len(x), self.config.latent_dim),) * 2)  # fmt: skip
        lines: list[str] = []
        config = RunConfig(model=ModelConfig(hidden=(8, 4)),
                           train=TrainConfig(epochs=2, batch_size=32, device="cpu"))  # fmt: skip
        result = train(config, make_tiny_dataset(), log=lines.append)
        note = next(line for line in lines if line.startswith("note: "))
        assert "only 8 optimizer steps" in note and "16 steps in all" in note
        assert result.posterior is not None and result.posterior.collapsed
        assert lines[-1].startswith("warning: posterior collapse: 0 of 2 latent dimensions")
        assert "8 per epoch, 16 in all" in lines[-1] and "tutorial-mse" in lines[-1]

    def test_a_model_that_learned_gets_no_warning(self):
        lines: list[str] = []
        config = RunConfig(
            model=ModelConfig(hidden=(16, 8), latent_dim=2),
            train=TrainConfig(epochs=30, batch_size=16, lr=3e-3, device="cpu", precision="32"),
        )
        result = train(config, make_tiny_dataset(), log=lines.append)
        assert result.posterior is not None and not result.posterior.collapsed
        assert not any("posterior collapse" in line for line in lines)


# ---------------------------------------------------------------- where it is recorded and shown


def npy_run(tmp_path, epochs: int = 1):
    """A run trained on a .npy file of two classes (so that vaelab can open its data again)."""
    images, _ = synthetic_images(200, seed=1)
    np.save(tmp_path / "x.npy", images)
    config = RunConfig(model=ModelConfig(hidden=(8, 4)),
                       train=TrainConfig(epochs=epochs, batch_size=20, device="cpu"))  # fmt: skip
    run_dir = tmp_path / "runs" / "r"
    train(config, data=str(tmp_path / "x.npy"), run_dir=run_dir, log=None)
    return run_dir


def test_training_records_the_figures_for_its_weights_in_config_json(tmp_path):
    run_dir = npy_run(tmp_path)
    record = json.loads((run_dir / "config.json").read_text())["posterior"]
    assert record["weights_sha256"] == weights_sha256(run_dir)
    assert PosteriorDiagnosis.from_dict(record) == recorded_posterior(run_dir)
    assert len(record["kl_per_dim"]) == 2 and record["images"] == 20


def test_evaluate_says_and_records_the_figures_in_eval_json(tmp_path, cli):
    run_dir = npy_run(tmp_path)
    evaluated = cli("evaluate", run_dir, "--iw-samples", 5, "--device", "cpu")
    assert evaluated.code == 0, evaluated.err
    line = next(x for x in evaluated.out.splitlines() if x.startswith("latent code: "))
    saved = json.loads((run_dir / "eval.json").read_text())
    assert f"of {len(saved['posterior']['kl_per_dim'])} latent dimensions active" in line
    assert recorded_posterior(run_dir) == PosteriorDiagnosis.from_dict(saved["posterior"])


def test_evaluate_warns_of_a_collapsed_posterior_naming_the_runs_steps(tmp_path, cli):
    run_dir = npy_run(tmp_path)
    weights = load_file(run_dir / "model.safetensors")
    weights["output.weight"].zero_()  # a decoder that ignores z: every output the same image
    save_file(weights, run_dir / "model.safetensors")
    evaluated = cli("evaluate", run_dir, "--iw-samples", 5, "--device", "cpu")
    assert evaluated.code == 0, evaluated.err
    warnings = [x for x in evaluated.out.splitlines() if x.startswith("warning: posterior")]
    assert len(warnings) == 1 and "9 per epoch, 9 in all" in warnings[0]
    assert json.loads((run_dir / "eval.json").read_text())["posterior"]["collapsed"] is True


def test_a_record_of_other_weights_is_not_used(tmp_path):
    run_dir = npy_run(tmp_path)
    info = json.loads((run_dir / "config.json").read_text())
    info["posterior"]["weights_sha256"] = "0" * 64
    (run_dir / "config.json").write_text(json.dumps(info))
    assert recorded_posterior(run_dir) is None


def test_the_report_shows_the_latent_code_and_the_warning(tmp_path):
    from vaelab.viz.report import write_report

    run_dir = npy_run(tmp_path)
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "Latent code (test set, 20 images)" in page and 'id="latent-dimensions"' in page
    diagnosis = recorded_posterior(run_dir)
    assert diagnosis is not None
    assert ('id="collapse-warning"' in page) is diagnosis.collapsed


def test_the_report_of_a_collapsed_model_warns_at_the_top_and_shows_eval_json_plainly(
    tmp_path, cli
):
    run_dir = npy_run(tmp_path)
    weights = load_file(run_dir / "model.safetensors")
    weights["output.weight"].zero_()  # a decoder that ignores z
    save_file(weights, run_dir / "model.safetensors")
    assert cli("evaluate", run_dir, "--iw-samples", 5, "--device", "cpu").code == 0
    assert cli("report", run_dir).code == 0
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    warning = page.index('id="collapse-warning"')
    assert warning < page.index('<section id="metrics">')
    assert "9 per epoch, 9 in all" in page[warning:]
    assert "kl_per_dim" not in page  # eval.json's figures are in the latent code's table


def test_the_compare_page_shows_active_dims_and_warns_of_a_collapsed_run(tmp_path):
    from vaelab.studies.compare_page import write_compare

    run_dir = npy_run(tmp_path)
    info = json.loads((run_dir / "config.json").read_text())
    info["posterior"].update(mean_variance_per_dim=[0.0, 0.0], reconstruction_spread=0.0)
    (run_dir / "config.json").write_text(json.dumps(info))
    page = write_compare([run_dir], tmp_path / "compare.html")
    assert "0/2 collapsed" in page.table
    html = page.path.read_text(encoding="utf-8")
    assert html.count('class="warning"') == 1 and "posterior collapse" in html
