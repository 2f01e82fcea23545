"""IWAE's fast path for MLP decoders against the general path, where it applies, and its blocks."""

import pytest
import torch

import vaelab.evaluation as evaluation
from vaelab.config import LIKELIHOODS, ModelConfig
from vaelab.errors import VaelabError
from vaelab.evaluation import block_rows, fast_decoder, importance_weighted, plan_chunks
from vaelab.models import VAE, HierarchicalVAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_model(dtype: torch.dtype = torch.float32, **config) -> VAE:
    """A random MLP VAE of 256 pixels; the Gaussians' scale away from 1."""
    torch.manual_seed(0)
    options = {"input_dim": 256, "hidden": (64, 32), "latent_dim": 2, **config}
    model = VAE(ModelConfig(**options)).to(dtype)
    if model.log_scale is not None:
        with torch.no_grad():
            model.log_scale.uniform_(-1.0, -0.5)
    return model


def images(count: int = 7, pixels: int = 256) -> torch.Tensor:
    return torch.rand(count, pixels, generator=torch.Generator().manual_seed(1))


def both_paths(monkeypatch, model, x, rows, labels=None, k=400):
    """importance_weighted through the fast path in blocks of `rows` pairs, and through the
    model's importance_terms on whole chunks (the general path, unblocked)."""
    monkeypatch.setattr(evaluation, "_block_bytes", lambda: 0)
    monkeypatch.setattr(evaluation, "_MIN_BLOCK_ROWS", rows)
    assert fast_decoder(model, rows) is not None
    fast = importance_weighted(model, x, k=k, seed=4, labels=labels)
    monkeypatch.setattr(evaluation, "fast_decoder", lambda *args: None)
    monkeypatch.setattr(evaluation, "_MIN_BLOCK_ROWS", 10**9)
    general = importance_weighted(model, x, k=k, seed=4, labels=labels)
    return fast, general


def assert_close(fast, general, dtype):
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    for a, b in zip(fast, general):
        assert torch.allclose(a, b, rtol=tolerance, atol=tolerance), (a - b).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_the_fast_path_gives_the_general_paths_numbers_for_every_likelihood(
    monkeypatch, likelihood, dtype
):
    model = random_model(dtype, likelihood=likelihood)
    # blocks of 512 rows reach oneDNN's route for float32, blocks of 5 split the 7 images
    for rows in (512, 5):
        fast, general = both_paths(monkeypatch, model, images().to(dtype), rows)
        assert_close(fast, general, dtype)
        monkeypatch.undo()


@pytest.mark.parametrize(
    "config", [{"prior": "vamp", "components": 5}, {"prior": "mog", "components": 3},
               {"conditional": True, "classes": 10, "likelihood": "bernoulli"}],
    ids=["vamp", "mog", "conditional"],
)  # fmt: skip
def test_the_fast_path_gives_the_general_paths_numbers_for_priors_and_classes(monkeypatch, config):
    model = random_model(**config)
    labels = torch.arange(7) % 10 if model.config.conditional else None
    fast, general = both_paths(monkeypatch, model, images(), 100, labels)
    assert_close(fast, general, torch.float32)


def test_the_fast_path_applies_to_plain_mlp_decoders_only():
    small = {"input_dim": 16, "hidden": (8,), "latent_dim": 2}
    assert fast_decoder(VAE(ModelConfig(**small)), 64) is not None
    assert fast_decoder(VAE(ModelConfig(**small, prior="vamp", components=3)), 64) is not None
    assert fast_decoder(VAE(ModelConfig(**small, conditional=True, classes=3)), 64) is not None
    assert fast_decoder(HierarchicalVAE(ModelConfig(**small, stochastic_layers=2)), 64) is None
    assert fast_decoder(VAE(ModelConfig(**small, arch="gated")), 64) is None
    assert fast_decoder(VAE(ModelConfig(input_dim=16, latent_dim=2, arch="conv")), 64) is None
    custom = VAE(
        ModelConfig(**small),
        encoder=torch.nn.Sequential(torch.nn.Linear(16, 4)),
        decoder=torch.nn.Sequential(torch.nn.Linear(2, 16)),
    )
    assert fast_decoder(custom, 64) is None
    assert fast_decoder(VAE(ModelConfig(**small)).to(torch.bfloat16), 64) is None
    hooked = VAE(ModelConfig(**small))
    hooked.output.register_forward_hook(lambda module, inputs, output: output * 2)
    assert fast_decoder(hooked, 64) is None

    class OwnDecoding(VAE):
        def decode_logits(self, z, labels=None):
            return super().decode_logits(z, labels) * 2

    assert fast_decoder(OwnDecoding(ModelConfig(**small)), 64) is None


@pytest.mark.parametrize(
    ("samples", "count", "rows"), [(10, 3, 7), (10, 3, 2), (1, 9, 4), (5, 5, 100)]
)
def test_blocks_tile_every_pair_of_a_chunk_once(samples, count, rows):
    seen = torch.zeros(samples, count, dtype=torch.int64)
    for block_samples, block_images in evaluation._blocks(samples, count, rows):
        block = seen[block_samples, block_images]
        assert 0 < block.numel() <= rows
        block += 1
    assert bool((seen == 1).all())


def test_the_memory_plan_counts_a_chunk_and_the_fast_paths_buffers_of_a_block():
    model = random_model(torch.float64)  # the addmm route: its buffers live across blocks
    for max_memory in (200_000, 10**6, 10**8):
        batch, chunk = plan_chunks(model, 50, 400, max_memory)
        rows = block_rows(model, batch, chunk)
        pair = evaluation._row_bytes(model) + evaluation._chunk_pair_bytes(model)
        assert batch * chunk * pair <= max_memory and rows <= batch * chunk
        decoder = fast_decoder(model, rows)
        assert decoder is not None
        codes = torch.randn(1, rows, 2, dtype=torch.float64)
        decoder.log_likelihood(codes, torch.rand(rows, 256, dtype=torch.float64))
        buffers = sum(buffer.numel() * buffer.element_size() for buffer in decoder.buffers.values())
        assert 0 < buffers <= rows * evaluation._row_bytes(model)


def test_bf16_products_stay_near_the_fp32_estimate_and_only_where_the_fast_path_applies():
    model, x = random_model(likelihood="bernoulli"), images()
    exact = importance_weighted(model, x, k=200, seed=2)
    low = importance_weighted(model, x, k=200, seed=2, precision="bf16")
    assert not torch.equal(exact.iwae_nll, low.iwae_nll)
    assert abs(exact.iwae_nll.mean() - low.iwae_nll.mean()).item() < 0.05
    with pytest.raises(VaelabError, match="precision must be one of 32, bf16"):
        importance_weighted(model, x, k=2, precision="16")
    hierarchical = HierarchicalVAE(ModelConfig(16, (8,), 2, stochastic_layers=2))
    with pytest.raises(VaelabError, match="is for MLP decoders"):
        importance_weighted(hierarchical, torch.rand(2, 16), k=2, precision="bf16")


def test_the_iwae_benchmark_gives_rows_for_the_combined_table(fashion_mnist):
    from tests.test_model_variants import _benchmark

    rows = _benchmark("bench_iwae").iwae_rows(3, k=50, threads=1, general_images=2, verbose=False)
    assert set(rows) == {"fast", "general"}
    fast = rows["fast"]
    assert fast["images"] == 3 and fast["k"] == 50 and fast["fast_path_applies"]
    assert fast["fraction_of_peak"] > 0 and fast["peak_route"] in fast["peaks_before"]
    assert rows["general"]["images"] == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pixels", [784, 101])  # 101: no group of pixels, softplus itself
def test_the_bernoulli_sum_of_softplus_through_products_of_sigmoids_is_softplus(pixels, dtype):
    model = random_model(dtype, input_dim=pixels, likelihood="bernoulli")
    decoder = fast_decoder(model, 12)
    logits = torch.randn(3, 4, pixels, dtype=torch.float64) * 8
    logits[0, 0, :4] = torch.tensor([-40.0, 40.0, 0.0, 1e-3])
    expected = (logits.clamp_min(0) + torch.log1p(torch.exp(-logits.abs()))).sum(-1)
    got = decoder._softplus_sum(logits.to(dtype, copy=True))
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.allclose(got.double(), expected, rtol=tolerance, atol=0)
