"""The MLP's hand-written training step against autograd, and where the loop uses it."""

import copy

import pytest
import torch

from vaelab.config import ModelConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.models import VAE, products
from vaelab.training import cpu
from vaelab.training import epoch as training
from vaelab.training.distributed import SINGLE_PROCESS
from vaelab.training.mlp_step import BF16_MIN_WEIGHTS, MLPStep, covers
from vaelab.training.precision import Bf16Copy, autocast

MODELS = {
    "tutorial shape": ModelConfig(input_dim=64, hidden=(48, 24, 12, 6), latent_dim=2),
    "one hidden layer, bernoulli": ModelConfig(
        input_dim=40, hidden=(16,), latent_dim=3, likelihood="bernoulli"
    ),
}
# A model whose first and last layers multiply in bf16 under bf16-mixed and the others in fp32.
MIXED = ModelConfig(input_dim=256, hidden=(64, 8), latent_dim=2)


def autograd_step(model, batch, noise, kl_scale, precision):
    model.zero_grad(set_to_none=True)
    with autocast(precision, batch.device):
        terms = model.loss(batch, None, kl_scale, noise)
    terms.loss.backward()
    return terms, {name: p.grad.clone() for name, p in model.named_parameters()}


def relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("name", MODELS)
def test_the_handwritten_step_gives_autograds_loss_and_gradients(name):
    torch.manual_seed(0)
    model = VAE(MODELS[name])
    reference = copy.deepcopy(model)
    batch = torch.rand(32, model.config.input_dim)
    noise = torch.randn(32, model.config.latent_dim)
    expected_terms, expected_grads = autograd_step(reference, batch, noise, 0.7, "32")

    terms = MLPStep(model, "32").step(batch, noise, 0.7)

    for got, expected in zip(terms, expected_terms):
        assert got.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-5)
    for param_name, param in model.named_parameters():
        assert param.grad.dtype == torch.float32
        assert relative_error(param.grad, expected_grads[param_name]) < 1e-5, param_name


def test_the_step_through_onednns_fp32_products_gives_autograds_gradients(monkeypatch):
    if not products.onednn_linear_available():
        pytest.skip("oneDNN's linear primitive is not in this torch")
    monkeypatch.setattr(products, "_ONEDNN_FP32_MIN_MACS", 0)  # as on an AMD CPU without the shim
    monkeypatch.setattr(products, "onednn_beats_blas_fp32", lambda: True)
    torch.manual_seed(0)
    model = VAE(MODELS["tutorial shape"])
    reference = copy.deepcopy(model)
    batch, noise = torch.rand(32, 64), torch.randn(32, 2)
    _, expected_grads = autograd_step(reference, batch, noise, 1.0, "32")

    step = MLPStep(model, "32")
    step.step(batch, noise)

    routes = {route for layer in step.plans[32] for route in layer[-3:]}
    assert routes == {products._onednn_product}
    for param_name, param in model.named_parameters():
        assert relative_error(param.grad, expected_grads[param_name]) < 1e-5, param_name


def test_each_batch_size_gets_its_own_routes(monkeypatch):
    if not products.onednn_linear_available():
        pytest.skip("oneDNN's linear primitive is not in this torch")
    monkeypatch.setattr(products, "_ONEDNN_FP32_MIN_MACS", 64 * 48 * 40)
    monkeypatch.setattr(products, "onednn_beats_blas_fp32", lambda: True)
    step = MLPStep(VAE(MODELS["tutorial shape"]), "32")
    step.step(torch.rand(40, 64), torch.randn(40, 2))
    step.step(torch.rand(8, 64), torch.randn(8, 2))
    first_layer = {rows: plan[0].forward for rows, plan in step.plans.items()}
    assert first_layer == {40: products._onednn_product, 8: products._blas_product}


@pytest.mark.parametrize("name", [*MODELS, "mixed"])
def test_the_bf16_step_is_as_close_to_fp32_as_autocast_is(name):
    config = MODELS.get(name, MIXED)
    torch.manual_seed(0)
    model = VAE(config)
    fp32, autocast_bf16 = copy.deepcopy(model), copy.deepcopy(model)
    batch, noise = torch.rand(32, config.input_dim), torch.randn(32, config.latent_dim)
    exact_terms, exact = autograd_step(fp32, batch, noise, 0.7, "32")
    _, bf16 = autograd_step(autocast_bf16, batch, noise, 0.7, "bf16-mixed")

    step = MLPStep(model, "bf16-mixed")
    terms = step.step(batch, noise, 0.7)

    assert terms.loss.item() == pytest.approx(exact_terms.loss.item(), rel=2e-2)
    for param_name, param in model.named_parameters():
        assert param.grad.dtype == torch.float32
        ours = relative_error(param.grad, exact[param_name])
        assert ours <= 2 * relative_error(bf16[param_name], exact[param_name]) + 1e-4, param_name


def test_bf16_mixed_multiplies_the_small_layers_in_fp32():
    step = MLPStep(VAE(ModelConfig()), "bf16-mixed")  # the tutorial's 784-400-200-100-20-2
    sizes = [layer.weight.numel() for layer in step.layers]
    dtypes = [layer.weight.dtype for layer in step.layers]
    assert dtypes == [torch.bfloat16 if size >= BF16_MIN_WEIGHTS else torch.float32
                      for size in sizes]  # fmt: skip
    assert dtypes.count(torch.float32) == 4  # 100-20, both heads, 2-20, 20-100
    assert [grad.weight.dtype for grad in step.grad_layers] == dtypes


def test_training_steps_follow_autograds_weights():
    torch.manual_seed(0)
    model = VAE(MODELS["tutorial shape"])
    reference = copy.deepcopy(model)
    config = TrainConfig()
    handwritten = training.make_objective(model, SINGLE_PROCESS, "32", config)
    assert isinstance(handwritten, MLPStep)
    optimizer = training.make_optimizer(model, config)
    autograd = training.make_objective(
        reference, SINGLE_PROCESS, "32", TrainConfig(backward="autograd")
    )
    reference_optimizer = training.make_optimizer(reference, config)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        batch, noise = torch.rand(16, 64, generator=generator), torch.randn(16, 2)
        training.training_step(handwritten, optimizer, batch, noise, "32")
        training.training_step(autograd, reference_optimizer, batch, noise, "32")
    for (name, param), expected in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(param, expected, rtol=1e-4, atol=1e-6, msg=name)


def test_the_parameters_become_views_of_one_buffer_with_their_values_and_names():
    torch.manual_seed(0)
    model = VAE(MODELS["tutorial shape"])
    before = {name: value.clone() for name, value in model.state_dict().items()}
    step = MLPStep(model, "32")
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert all(p.untyped_storage().data_ptr() == step.weights.untyped_storage().data_ptr()
               for p in model.parameters())  # fmt: skip
    with torch.no_grad():
        model.mu_head.weight.add_(1.0)  # an optimizer's in-place update reaches the products
    assert torch.equal(step.layers[len(MODELS["tutorial shape"].hidden)].weight[:2],
                       model.mu_head.weight)  # fmt: skip


def test_bf16_steps_read_the_current_fp32_weights():
    torch.manual_seed(0)
    model = VAE(MIXED)
    step = MLPStep(model, "bf16-mixed")
    assert step.layers[-1].weight.dtype == torch.bfloat16  # the output layer reads the shadow
    batch, noise = torch.rand(8, 256), torch.randn(8, 2)
    first = step.step(batch, noise).loss
    with torch.no_grad():
        model.output.bias.add_(3.0)
    assert step.step(batch, noise).loss != first
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"arch": "gated"}, "arch is 'gated'"),
        ({"prior": "vamp", "components": 4}, "the prior is 'vamp'"),
        ({"conditional": True, "classes": 3}, "the model is conditional"),
        ({"likelihood": "gaussian"}, "the likelihood is 'gaussian'"),
        ({"likelihood": "continuous-bernoulli"}, "the likelihood is 'continuous-bernoulli'"),
    ],
)
def test_models_it_does_not_cover_train_with_autograd(change, reason):
    model = VAE(ModelConfig(input_dim=64, hidden=(16, 8), **change))
    assert covers(model, "32") == reason
    objective = training.make_objective(model, SINGLE_PROCESS, "bf16-mixed", TrainConfig())
    assert isinstance(objective, Bf16Copy)
    with pytest.raises(ValueError, match=reason):
        MLPStep(model, "32")


def test_the_iwae_objective_more_samples_and_the_autograd_switch_keep_autograd():
    model = VAE(MODELS["tutorial shape"])
    assert covers(model, "32", samples=1, objective="iwae") is not None
    assert covers(model, "32", samples=3) is not None
    for config in (TrainConfig(objective="iwae", train_samples=2), TrainConfig(train_samples=2),
                   TrainConfig(backward="autograd")):  # fmt: skip
        assert not isinstance(training.make_objective(model, SINGLE_PROCESS, "32", config), MLPStep)
    assert covers(model.double(), "32") == "the weights are not float32"


def test_backward_must_be_a_known_choice():
    with pytest.raises(VaelabError, match="backward must be one of auto, autograd"):
        TrainConfig(backward="manual")


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_nt_computes_the_three_products_of_a_dense_layer(monkeypatch, onednn, dtype):
    if onednn and not products.onednn_linear_available():
        pytest.skip("oneDNN's linear primitive is not in this torch")
    monkeypatch.setattr(products, "_ONEDNN_FP32_MIN_MACS", 0 if onednn else 1 << 62)
    monkeypatch.setattr(products, "onednn_beats_blas_fp32", lambda: onednn)
    if not onednn:
        monkeypatch.setattr(products, "onednn_linear_available", lambda: False)
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(20, 30, generator=generator), torch.randn(10, 30, generator=generator)
    g, b = torch.randn(20, 10, generator=generator), torch.randn(10, generator=generator)
    x, w, g, b = (t.to(dtype) for t in (x, w, g, b))
    assert products.uses_onednn(x, w, bias=True) is onednn
    tolerance = {"rtol": 2e-2, "atol": 5e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(products.matmul_nt(x, w, b, relu=True),
                               torch.relu(x @ w.t() + b), **tolerance)  # fmt: skip
    torch.testing.assert_close(products.matmul_nt(g, w.t()), g @ w, **tolerance)
    torch.testing.assert_close(products.matmul_nt(g.t(), x.t()), g.t() @ x, **tolerance)


def adam_runs(steps, resume_at=None):
    """Weights after `steps` steps of the hand-written step + flat Adam and of the same step +
    `optimizer.step()`; with `resume_at`, the flat run's optimizer is reloaded from its
    state_dict there (as a checkpoint does)."""
    runs = []
    for flat in (True, False):
        torch.manual_seed(0)
        model = VAE(MODELS["tutorial shape"])
        step = MLPStep(model, "32")
        optimizer = training.make_optimizer(model, TrainConfig())
        generator = torch.Generator().manual_seed(1)
        for index in range(steps):
            if flat and index == resume_at:
                optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
            batch, noise = torch.rand(16, 64, generator=generator), torch.randn(16, 2)
            step.step(batch, noise)
            if flat:
                step.adam.step(optimizer)
            else:
                optimizer.step()
        runs.append((model, optimizer))
    return runs


@pytest.mark.parametrize(
    ("vendor", "shim", "onednn"),
    [("AuthenticAMD", False, True), ("AuthenticAMD", True, False), ("GenuineIntel", False, False)],
)
def test_fp32_products_go_to_onednn_only_where_mkl_skips_its_avx512_kernels(
    monkeypatch, vendor, shim, onednn
):
    monkeypatch.setattr(cpu, "cpu_info", lambda: {"vendor_id": vendor})
    monkeypatch.setattr(cpu, "mkl_override_active", lambda: shim)
    products.onednn_beats_blas_fp32.cache_clear()
    try:
        mkl = "BLAS_INFO=mkl" in torch.__config__.show()
        assert products.onednn_beats_blas_fp32() is (onednn and mkl)
    finally:
        products.onednn_beats_blas_fp32.cache_clear()


def test_fp32_products_stay_with_mkl_where_it_runs_its_avx512_kernels(monkeypatch):
    a, b = torch.randn(200, 784), torch.randn(400, 784)
    monkeypatch.setattr(products, "onednn_beats_blas_fp32", lambda: False)
    assert not products.uses_onednn(a, b, bias=True)
    bf16 = products.uses_onednn(a.bfloat16(), b.bfloat16(), bias=True)
    assert bf16 == products.onednn_linear_available()  # MKL has no bf16 products
    torch.testing.assert_close(products.matmul_nt(a, b, relu=True), (a @ b.t()).relu())


def test_flat_adam_is_optimizer_steps_arithmetic():
    (model, optimizer), (reference, reference_optimizer) = adam_runs(6)
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    state, expected = optimizer.state_dict()["state"], reference_optimizer.state_dict()["state"]
    for index in expected:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[index][key], expected[index][key], rtol=1e-5,
                                       atol=1e-12)  # fmt: skip


def test_flat_adam_after_a_reloaded_state_repeats_the_uninterrupted_run_bit_for_bit():
    (resumed, resumed_optimizer), _ = adam_runs(6, resume_at=3)
    (straight, straight_optimizer), _ = adam_runs(6)
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), straight.parameters()))
    state = resumed_optimizer.state_dict()["state"]
    expected = straight_optimizer.state_dict()["state"]
    for index in expected:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state[index][key], expected[index][key]), (index, key)


def test_flat_adam_steps_other_optimizers_as_they_are():
    torch.manual_seed(0)
    model = VAE(MODELS["tutorial shape"])
    step = MLPStep(model, "32")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    before = [p.clone() for p in model.parameters()]
    step.step(torch.rand(8, 64), torch.randn(8, 2))
    step.adam.step(optimizer)
    assert step.adam._group(optimizer) is None
    assert all("max_exp_avg_sq" in optimizer.state[p] for p in model.parameters())
    assert not any(torch.equal(a, b) for a, b in zip(before, model.parameters()))
