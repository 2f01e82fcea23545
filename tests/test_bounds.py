"""Sizes, counts and durations are bounded before anything is allocated or started: images to
decode against the free memory (with 1 MiB "free", a regression would refuse nothing and the
test would see the decoder run, not a large allocation), the IWAE time probe's samples, and the
declared bounds of config fields and run options."""

from __future__ import annotations

import pytest
import torch

from tests.bad_input_cases import saved_run
from tests.helpers import make_tiny_dataset
from vaelab import _resources, decoding, iwae_time, latent
from vaelab._io import read_bytes
from vaelab.config import MAX_EPOCHS, MAX_LAYERS, MAX_WIDTH, ModelConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.evaluation import MAX_IW_SAMPLES, importance_weighted
from vaelab.evaluation import evaluate as vaelab_evaluate
from vaelab.models import VAE
from vaelab.models.vae import check_model_size
from vaelab.training.distributed import MAX_TIMEOUT_S, check_timeout
from vaelab.training.guard import MAX_CHECKPOINT_EVERY, check_checkpoint_every

MiB = 1 << 20


def model() -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(input_dim=16, hidden=(8,))).eval()


@pytest.fixture
def one_mib_free(monkeypatch) -> None:
    """The process may allocate 1 MiB more: 10,000 decoded 4x4 images (1.9 MB) do not fit."""
    monkeypatch.setattr(decoding, "available_memory", lambda: MiB)


def never_decode(monkeypatch, vae: VAE) -> None:
    """Make any decoding of `vae` fail the test: the refusal must come first."""
    monkeypatch.setattr(vae, "decode", lambda *a, **k: pytest.fail("decoded before the check"))


# ---------------------------------------------------------------- decoding


def test_decoding_bytes_grow_by_three_float32_copies_per_image():
    vae = model()
    grown = decoding.decoding_bytes(vae, 4000, 2000) - decoding.decoding_bytes(vae, 3000, 2000)
    assert grown == 1000 * 16 * 4 * decoding.OUTPUT_COPIES


def test_sample_beyond_the_free_memory_is_refused_before_any_image(one_mib_free, monkeypatch):
    vae = model()
    never_decode(monkeypatch, vae)
    with pytest.raises(VaelabError) as refused:
        latent.sample(vae, 10_000, seed=0)
    assert refused.value.parameters == ("n",)
    message = str(refused.value)
    assert message.startswith("decoding 10,000 images of 1x4x4 (64 bytes each) needs 1.8 MiB (")
    assert message.endswith("; ask for fewer images with n")


def test_decode_names_its_codes_and_decodes_what_fits(one_mib_free, monkeypatch):
    vae = model()
    assert latent.decode(vae, torch.zeros(100, 2)).shape == (100, 16)
    never_decode(monkeypatch, vae)
    with pytest.raises(VaelabError, match="ask for fewer images with z$") as refused:
        latent.decode(vae, torch.zeros(10_000, 2))
    assert refused.value.parameters == ("z",)


def test_images_beyond_the_memory_are_refused_without_probing_the_decoder(
    one_mib_free, monkeypatch
):
    monkeypatch.setattr(decoding, "_decoder_floats", lambda m: pytest.fail("probed"))
    with pytest.raises(VaelabError, match="^decoding 100,000 images"):
        decoding.require_decoding_memory(model(), 100_000, 2000, ("n",))


def test_an_unknown_free_memory_refuses_nothing(monkeypatch):
    monkeypatch.setattr(decoding, "available_memory", lambda: None)
    decoding.require_decoding_memory(model(), 100_000, 2000, ("n",))


def test_a_batch_size_below_1_is_refused():
    with pytest.raises(VaelabError, match="batch_size must be a whole number at least 1, got 0"):
        latent.decode(model(), torch.zeros(3, 2), batch_size=0)


def test_the_manifold_grid_beyond_the_memory_is_refused(one_mib_free, monkeypatch):
    plots = pytest.importorskip("vaelab.viz.plots")
    vae = model()
    never_decode(monkeypatch, vae)
    with pytest.raises(VaelabError, match="^decoding 10,000 images") as refused:
        plots.manifold(vae, (4, 4), grid=100)
    assert refused.value.parameters == ("grid",)


def test_sample_command_refuses_in_one_line_naming_n(one_mib_free, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    saved_run(tmp_path)
    code, _, err = cli("sample", "runs/old", "--n", "10000", "--out", "s.npy")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("vaelab: error: decoding 10,000 images")
    assert err.rstrip().endswith("ask for fewer images with --n")
    assert not (tmp_path / "s.npy").exists()


# ---------------------------------------------------------------- IWAE


def test_the_time_probe_draws_at_most_probe_samples_and_scales_by_k(monkeypatch):
    drawn: list[int] = []
    monkeypatch.setattr(iwae_time, "importance_weighted", lambda m, x, k, *a, **o: drawn.append(k))
    clock = iter([0.0, 1.0, 1.0, 2.0])  # each pass a second
    monkeypatch.setattr(iwae_time.time, "perf_counter", lambda: next(clock))
    images = make_tiny_dataset().test_images  # 64
    k = 40 * iwae_time.PROBE_SAMPLES
    estimate = iwae_time.estimate_iwae_time(model(), images, k, "1GB")
    assert drawn == [iwae_time.PROBE_SAMPLES] * 2
    assert estimate is not None and estimate.seconds == pytest.approx(1.0 / 4 * 64 * 40)
    assert estimate.describe(k).endswith(f"(measured on 4 images at k={iwae_time.PROBE_SAMPLES})")


def test_k_beyond_its_bound_is_refused_before_any_sample():
    bound = f"at least 1 and at most {MAX_IW_SAMPLES:,}, got"
    with pytest.raises(VaelabError, match=bound) as refused:
        importance_weighted(model(), torch.zeros(2, 16), MAX_IW_SAMPLES + 1)
    assert refused.value.parameters == ("k",)


@pytest.mark.parametrize("minutes", [float("nan"), float("inf"), -1.0, "60"])
def test_a_time_budget_not_a_finite_number_of_minutes_is_refused(minutes):
    with pytest.raises(VaelabError, match="time_budget must be a finite number of minutes"):
        iwae_time.check_budget(minutes)


def test_a_finite_time_budget_passes():
    iwae_time.check_budget(0)
    iwae_time.check_budget(60.0)


# ---------------------------------------------------------------- declared bounds


@pytest.mark.parametrize("field", ["epochs", "kl_warmup", "early_stopping"])
def test_epoch_counts_are_bounded(field):
    TrainConfig(**{field: MAX_EPOCHS})
    with pytest.raises(VaelabError, match=f"^{field} must be .*1,000,000, got 1000001$"):
        TrainConfig(**{field: MAX_EPOCHS + 1})


@pytest.mark.parametrize(
    "fields",
    [{"latent_dim": MAX_WIDTH + 1}, {"hidden": (8, MAX_WIDTH + 1)}, {"input_dim": 2**63}],
)
def test_widths_are_bounded_before_any_layer_is_counted(fields):
    with pytest.raises(VaelabError, match="must be at most 2,147,483,647"):
        ModelConfig(**fields)


def test_classes_are_bounded():
    with pytest.raises(VaelabError, match="classes must be a whole number from 0 to 2,147,483,647"):
        ModelConfig(classes=2**62, conditional=True)


def test_the_layers_are_counted_before_any_is_built():
    ModelConfig(hidden=(4,) * MAX_LAYERS)
    with pytest.raises(VaelabError, match="hidden must list at most 100 layer sizes, got 100,000"):
        ModelConfig(hidden=(1,) * 100_000)


def test_a_model_whose_weights_overflow_the_count_is_refused():
    config = ModelConfig(
        input_dim=4096 * 4096, image_shape=(1, 4096, 4096), arch="conv",
        hidden=(1, 400_000_000, 400_000_000),
    )  # fmt: skip
    with pytest.raises(VaelabError, match="would have more than 2\\*\\*63 weights"):
        check_model_size(config)


def test_checkpoint_intervals_and_rank_timeouts_are_bounded():
    check_checkpoint_every(MAX_CHECKPOINT_EVERY)
    check_timeout(MAX_TIMEOUT_S)
    with pytest.raises(VaelabError, match="checkpoint_every must be at most"):
        check_checkpoint_every(MAX_CHECKPOINT_EVERY + 1)
    with pytest.raises(VaelabError, match="checkpoint_every must be a whole number of steps"):
        check_checkpoint_every(2.5)  # type: ignore[arg-type]
    for bad in (0, MAX_TIMEOUT_S + 1, 2**63, 1.5):
        with pytest.raises(VaelabError, match="dist_timeout_s must be"):
            check_timeout(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- reads


def test_a_read_beyond_the_free_memory_is_refused_before_it(tmp_path, monkeypatch):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(1000))
    monkeypatch.setattr(_resources, "available_memory", lambda: 1500)
    with pytest.raises(
        VaelabError,
        match=r"data.bin: reading a file of 1000 bytes needs 2.0 KiB \(2,000 bytes\) of memory",
    ):
        read_bytes(path)
    monkeypatch.setattr(_resources, "available_memory", lambda: 2000)
    assert read_bytes(path) == bytes(1000)


# ---------------------------------------------------------------- whole numbers of the API


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({"epochs": 1.5}, "epochs must be at least 1, got 1.5"),
        ({"epochs": "3"}, "epochs must be at least 1, got '3'"),
        ({"batch_size": True}, "batch_size must be at least 1, got True"),
        ({"lr": 10**400}, "lr .the learning rate. must be a finite number above 0, got 1000"),
        ({"beta": "1"}, "beta must be a finite number of at least 0, got '1'"),
    ],
)
def test_config_numbers_of_another_type_are_refused_in_one_line(fields, refusal):
    with pytest.raises(VaelabError, match=f"^{refusal}"):
        TrainConfig(**fields)


@pytest.mark.parametrize("batch_size", [0, -1, True, 1.5])
@pytest.mark.parametrize("call", ["evaluate", "posterior", "decode"])
def test_batch_sizes_that_are_not_whole_numbers_of_at_least_1_are_refused(call, batch_size):
    vae = model()
    runs = {
        "evaluate": lambda: vaelab_evaluate(vae, torch.rand(4, 16), batch_size),
        "posterior": lambda: latent.posterior(vae, torch.rand(4, 16), batch_size),
        "decode": lambda: latent.decode(vae, torch.zeros(4, 2), batch_size),
    }
    with pytest.raises(VaelabError, match="^batch_size must be a whole number at least 1, got"):
        runs[call]()


@pytest.mark.parametrize("n", [5.5, True, 0, 100_001])
def test_sample_counts_are_whole_numbers_within_the_bound(n):
    with pytest.raises(VaelabError, match="^n \\(samples\\) must be between 1 and 100000"):
        latent.sample(model(), n)


def test_the_explorer_answers_images_beyond_the_memory_with_400(
    one_mib_free, tmp_path, monkeypatch
):
    testclient = pytest.importorskip("fastapi.testclient")
    from vaelab.explorer.app import create_app

    monkeypatch.chdir(tmp_path)
    saved_run(tmp_path)
    client = testclient.TestClient(create_app(tmp_path / "runs" / "old"))
    monkeypatch.setattr(decoding, "available_memory", lambda: 1024)
    answer = client.post("/api/sample", json={"count": 8, "seed": 0})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("decoding 8 images of 1x4x4")


def test_compare_refuses_more_runs_than_a_sweep_makes_before_reading_any(tmp_path):
    compare_page = pytest.importorskip("vaelab.studies.compare_page")
    runs = [tmp_path / f"missing{i}" for i in range(compare_page.MAX_RUNS + 1)]
    with pytest.raises(VaelabError, match="^1,001 runs to compare, more than the 1,000"):
        compare_page.write_compare(runs, tmp_path / "c.html")
    assert not (tmp_path / "c.html").exists()


def test_evaluate_refuses_a_test_pass_beyond_the_memory_naming_images(tmp_path, monkeypatch, cli):
    from vaelab.training import footprint

    monkeypatch.chdir(tmp_path)
    saved_run(tmp_path)
    monkeypatch.setattr(footprint, "available_memory", lambda: MiB)
    code, _, err = cli("evaluate", "runs/old", "--device", "cpu", "--iw-samples", "2")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("vaelab: error: a test batch of 50 (the run's test_batch_size is 50) ")
    assert err.rstrip().endswith("; evaluate fewer of them with --images")
    assert not (tmp_path / "runs" / "old" / "eval.json").exists()
