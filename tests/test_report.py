import base64
import io
import json
import re
from dataclasses import replace

import html5lib
import matplotlib.image
import pytest
import torch

from tests.helpers import make_tiny_dataset, synthetic_images, write_csv
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.evaluation import evaluate
from vaelab.models.likelihoods import gaussian_constant
from vaelab.rundir import FIGURE_FILES, weights_sha256
from vaelab.training import train
from vaelab.viz import plots
from vaelab.viz.describe import data_facts, data_sentence, selection_sentence
from vaelab.viz.report import CAPTIONS, render_report, write_report
from vaelab.viz.report_metrics import epochs_table

EVALUATION = {
    "likelihood": "tutorial-mse",
    "images": 64,
    "negative_elbo_nats": 731.2468,
    "reconstruction_nats": 729.0012,
    "kl_nats": 2.2456,
    "iw_samples": 50,
    "iwae_nll_nats": 730.8135,
    "iwae_stderr_nats": 0.4321,
    "seed": 12345,
    "seconds": 1.75,
}


def trained_run(dataset, run_dir):
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4)),
        train=TrainConfig(epochs=3, batch_size=32, test_batch_size=64, device="cpu"),
    )
    train(config, dataset, run_dir=run_dir, log=None)
    return plots.open_run(run_dir, dataset)


@pytest.fixture
def run(tiny_dataset, tmp_path):
    return trained_run(tiny_dataset, tmp_path / "run")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One run without figures, and its report (which draws them): (run, report text)."""
    run = trained_run(make_tiny_dataset(), tmp_path_factory.mktemp("report") / "run")
    assert not (run.run_dir / "figures").exists()
    return run, write_report(run.run_dir, dataset=run.dataset).read_text(encoding="utf-8")


def parse(text: str):
    """The document as an element tree, after a strict HTML5 parse (any parse error raises)."""
    html5lib.HTMLParser(strict=True).parse(text)
    return html5lib.parse(text, namespaceHTMLElements=False)


def text_of(element) -> str:
    return " ".join(" ".join(element.itertext()).split())


def test_report_is_valid_self_contained_html5(written):
    run, text = written
    assert (run.run_dir / "report.html").read_text(encoding="utf-8") == text
    assert text.startswith("<!DOCTYPE html>")
    doc = parse(text)
    assert doc.get("lang") == "en" and doc.find(".//head/title") is not None
    assert doc.find(".//meta[@charset='utf-8']") is not None
    links = [el.get(a) for el in doc.iter() for a in ("src", "href") if el.get(a) is not None]
    assert links and all(link.startswith(("data:", "#")) for link in links), links
    assert not re.search(r"https?://|url\(", text)


def test_every_figure_is_drawn_and_embedded_with_a_caption(written):
    run, text = written
    doc = parse(text)
    figures = doc.findall(".//figure")
    assert [f.get("id") for f in figures] == [n.removesuffix(".png") for n in FIGURE_FILES]
    for figure, name in zip(figures, FIGURE_FILES):
        image = figure.find("img")
        payload = base64.b64decode(image.get("src").removeprefix("data:image/png;base64,"))
        assert payload == (run.run_dir / "figures" / name).read_bytes()
        pixels = matplotlib.image.imread(io.BytesIO(payload), format="png")
        assert (int(image.get("height")), int(image.get("width"))) == pixels.shape[:2]
        assert image.get("alt") == CAPTIONS[name]
        assert CAPTIONS[name] in text_of(figure.find("figcaption"))


def test_report_shows_final_metrics_epochs_config_data_and_versions(written):
    run, text = written
    doc = parse(text)
    last = run.history[-1]
    final = text_of(doc.find(".//table[@id='final-metrics']"))
    for value in (
        last["test_loss"],
        last["test_reconstruction"],
        last["test_kld"],
        last["train_loss"],
    ):
        assert f"{value:.4f}" in final
    assert f"{last['test_loss'] + gaussian_constant(16):.4f}" in final
    epochs = doc.findall(".//table[@id='epochs']/tbody/tr")
    assert [text_of(row).split()[0] for row in epochs] == ["1", "2", "3"]
    assert text_of(doc.find(".//code[@id='serve-command']")) == f"vaelab serve {run.run_dir}"
    total = sum(row["seconds"] for row in run.history)
    assert f"{total:.1f} s of training over 3 epochs" in text_of(doc.find(".//section"))
    config = text_of(doc.find(".//table[@id='config']"))
    assert "model.latent_dim 2" in config and "train.epochs 3" in config
    assert "model.hidden 8, 4" in config
    assert "source synthetic" in text_of(doc.find(".//table[@id='data']"))
    versions = text_of(doc.find(".//table[@id='versions']"))
    assert "device (training) cpu" in versions and "report.matplotlib" in versions
    assert doc.find(".//table[@id='evaluation']") is None


def test_a_beta_weighted_bernoulli_run_reports_its_negative_elbo_beta_and_likelihood(
    tiny_dataset, tmp_path
):
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4), likelihood="bernoulli"),
        train=TrainConfig(epochs=1, batch_size=32, test_batch_size=64, beta=4.0, device="cpu"),
    )
    train(config, tiny_dataset, run_dir=tmp_path / "run", log=None)
    doc = parse(write_report(tmp_path / "run", dataset=tiny_dataset).read_text(encoding="utf-8"))
    train_row = plots.open_run(tmp_path / "run", tiny_dataset).history[-1]
    rows = {text_of(r.find("td")): r for r in doc.findall(".//table[@id='final-metrics']/tbody/tr")}
    train_elbo = text_of(rows["negative ELBO (nats per image)"]).split()[-3]
    assert train_elbo == f"{train_row['train_reconstruction'] + train_row['train_kld']:.4f}"
    assert "reconstruction, -log p(x|z) (nats)" in rows
    notes = text_of(doc.find(".//section[@id='metrics']"))
    assert "\u03b2 = 4" in notes and "Likelihood bernoulli" in notes


def test_eval_json_is_shown_when_present(run):
    evaluation = {**EVALUATION, "weights_sha256": weights_sha256(run.run_dir)}
    (run.run_dir / "eval.json").write_text(json.dumps(evaluation))
    doc = parse(write_report(run.run_dir, dataset=run.dataset).read_text(encoding="utf-8"))
    table = text_of(doc.find(".//table[@id='evaluation']"))
    for expected in (
        "IWAE estimate of -log p(x) (nats per image) 730.8135",
        "standard error of the IWAE estimate (nats) 0.4321",
        "negative ELBO (nats per image) 731.2468",
        "importance samples k 50",
        "decoder likelihood p(x|z) tutorial-mse",
    ):
        assert expected in table


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_broken_eval_json_is_named(run, content):
    (run.run_dir / "eval.json").write_text(content)
    with pytest.raises(VaelabError, match="eval.json: "):
        write_report(run.run_dir, dataset=run.dataset)


def test_figures_are_kept_only_when_drawn_from_the_current_weights(run):
    figures = run.run_dir / "figures"
    write_report(run.run_dir, dataset=run.dataset)  # draws them, recording the weights
    drawn = (figures / "manifold.png").read_bytes()
    page = write_report(run.run_dir, dataset=run.dataset).read_text(encoding="utf-8")
    assert (figures / "manifold.png").read_bytes() == drawn  # current figures are kept
    assert "not drawn from these weights" not in page
    plots.write_figures(run.run_dir, grid=3, dataset=run.dataset)  # records no weights
    (run.run_dir / "figures.json").write_text(json.dumps({"weights_sha256": "0" * 64}))
    page = write_report(run.run_dir, dataset=run.dataset).read_text(encoding="utf-8")
    assert (figures / "manifold.png").read_bytes() == drawn  # all redrawn with the defaults
    assert "The figures found in figures/ were not drawn from these weights" in page
    assert json.loads((run.run_dir / "figures.json").read_text()) == {
        "weights_sha256": weights_sha256(run.run_dir)
    }


@pytest.mark.parametrize("fingerprint", [None, "0" * 64])
def test_an_eval_json_of_other_weights_is_not_shown(run, fingerprint):
    evaluation = (
        dict(EVALUATION) if fingerprint is None else {**EVALUATION, "weights_sha256": fingerprint}
    )
    (run.run_dir / "eval.json").write_text(json.dumps(evaluation))
    doc = parse(write_report(run.run_dir, dataset=run.dataset).read_text(encoding="utf-8"))
    assert doc.find(".//table[@id='evaluation']") is None
    assert "730.8135" not in text_of(doc.find(".//main"))
    notes = [text_of(p) for p in doc.findall(".//p[@class='stale']")]
    why = "records no fingerprint" if fingerprint is None else "was written for other weights"
    assert len(notes) == 1 and why in notes[0] and "so its numbers are not shown" in notes[0]


def _csv_args(tmp_path):
    train_x, train_y = synthetic_images(120, seed=1)
    test_x, test_y = synthetic_images(40, seed=2)
    return (
        "--train-csv", write_csv(tmp_path / "train.csv", train_x.reshape(120, -1), train_y),
        "--test-csv", write_csv(tmp_path / "test.csv", test_x.reshape(40, -1), test_y),
        "--runs-dir", tmp_path / "runs", "--name", "r", "--device", "cpu", "--epochs", 1,
        "--batch-size", 40,
    )  # fmt: skip


def test_a_run_trained_again_with_overwrite_never_shows_the_old_iwae(tmp_path, cli):
    run_dir = tmp_path / "runs" / "r"
    first = cli("train", *_csv_args(tmp_path), "--hidden", "8,4", "--no-plots")
    assert first.code == 0, first.err
    evaluated = cli("evaluate", run_dir, "--iw-samples", 5, "--device", "cpu")
    assert evaluated.code == 0, evaluated.err
    old = json.loads((run_dir / "eval.json").read_text())
    assert old["weights_sha256"] == weights_sha256(run_dir)
    old_text = (run_dir / "eval.json").read_text()
    again = cli("train", *_csv_args(tmp_path), "--hidden", "6,3", "--no-plots", "--overwrite")
    assert again.code == 0, again.err
    assert not (run_dir / "eval.json").exists()  # --overwrite removed it
    (run_dir / "eval.json").write_text(old_text)  # an old copy put back
    reported = cli("report", run_dir)
    assert reported.code == 0, reported.err
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert f"{old['iwae_nll_nats']:.4f}" not in page
    assert "eval.json was written for other weights" in page


def test_evaluate_rewrites_a_report_that_showed_no_evaluation(tmp_path, cli):
    run_dir = tmp_path / "runs" / "r"
    assert cli("train", *_csv_args(tmp_path), "--hidden", "8,4", "--no-plots").code == 0
    assert cli("report", run_dir).code == 0
    assert "vaelab evaluate" in (run_dir / "report.html").read_text(encoding="utf-8")
    evaluated = cli("evaluate", run_dir, "--iw-samples", 5, "--device", "cpu")
    assert evaluated.code == 0, evaluated.err
    assert evaluated.out.splitlines()[-1] == f"rewrote {run_dir / 'report.html'}"
    nll = json.loads((run_dir / "eval.json").read_text())["iwae_nll_nats"]
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert f"{nll:.2f}" in page
    precision = json.loads((run_dir / "config.json").read_text())["precision"]
    assert precision in ("32", "bf16-mixed") and f"<td>{precision}</td>" in page


def test_report_command_draws_the_figures_writes_the_report_and_names_a_missing_run(tmp_path, cli):
    train_x, train_y = synthetic_images(120, seed=1)
    test_x, test_y = synthetic_images(40, seed=2)
    trained = cli(
        "train", "--epochs", 1, "--batch-size", 40, "--hidden", "8,4", "--device", "cpu",
        "--no-plots", "--runs-dir", tmp_path / "runs", "--name", "cli",
        "--train-csv", write_csv(tmp_path / "train.csv", train_x.reshape(120, -1), train_y),
        "--test-csv", write_csv(tmp_path / "test.csv", test_x.reshape(40, -1), test_y),
    )  # fmt: skip
    assert trained.code == 0, trained.err
    run_dir = tmp_path / "runs" / "cli"
    reported = cli("report", run_dir)
    assert reported.code == 0, reported.err
    assert reported.out.splitlines()[-1] == f"wrote {run_dir / 'report.html'}"
    assert f"wrote {run_dir / 'figures' / 'samples.png'}" in reported.out
    missing = cli("report", tmp_path / "missing")
    assert missing.code == 2
    assert missing.err == f"vaelab: error: {tmp_path / 'missing'}: run directory not found\n"


# ---------------------------------------------------------------- colour, no labels, weights kept


def rgb_unlabelled_dataset() -> Dataset:
    """3x8x6 RGB images without labels: 64 to train, 32 to test."""
    generator = torch.Generator().manual_seed(0)
    return Dataset(
        torch.rand(64, 3, 8, 6, generator=generator), None,
        torch.rand(32, 3, 8, 6, generator=generator), None,
        (8, 6), (), "synthetic-rgb", channels=3, format="arrays",
    )  # fmt: skip


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    dataset = rgb_unlabelled_dataset()
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4)), train=TrainConfig(epochs=1, batch_size=32, device="cpu")
    )
    run_dir = tmp_path_factory.mktemp("rgb") / "run"
    train(config, dataset, run_dir=run_dir, log=None)
    return plots.open_run(run_dir, dataset)


def test_the_report_of_an_unlabelled_rgb_run_names_its_source_format_size_and_labels(rgb_run):
    doc = parse(write_report(rgb_run.run_dir, dataset=rgb_run.dataset).read_text("utf-8"))
    summary = text_of(doc.find(".//span[@id='data-summary']"))
    assert summary == "synthetic-rgb (arrays): RGB images of 8 \u00d7 6 pixels, unlabelled"
    assert text_of(doc.find(".//span[@id='weights-summary']")) == "last epoch (1)"
    assert len(doc.findall(".//figure/img")) == len(FIGURE_FILES)
    alt = {f.get("id"): f.find("img").get("alt") for f in doc.findall(".//figure")}
    assert "no labels" in alt["latent"] and "consecutive test images" in alt["interpolation"]
    assert "format arrays" in text_of(doc.find(".//table[@id='data']"))
    assert doc.find(".//table[@id='selection']") is None


def test_data_facts_of_a_run_without_the_new_keys_come_from_its_data():
    facts = data_facts({"dataset": {"source": "old.csv"}}, make_tiny_dataset())
    assert data_sentence(facts) == "old.csv: greyscale images of 4 \u00d7 4 pixels, 2 classes"


NAN = float("nan")


def validated_history(epochs: int, tested: tuple[int, ...]) -> list[dict[str, float]]:
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": float(epoch), "seconds": 0.5}
        for split, base in (("train", 30.0), ("test", 31.0), ("val", 32.0)):
            value = base - epoch if split != "test" or epoch in tested else NAN
            row |= {f"{split}_loss": value, f"{split}_reconstruction": value - 1}
            row[f"{split}_kld"] = 1.0 if value == value else NAN
        rows.append(row)
    return rows


def test_the_report_says_which_epochs_weights_were_kept_and_skips_what_was_not_measured(
    rgb_run,
):
    selection = {"weights": "best-validation", "best_epoch": 2, "epochs_run": 4,
                 "stopped_early": True}  # fmt: skip
    run = replace(rgb_run, info={**rgb_run.info, "selection": selection})
    run.__dict__["history"] = validated_history(4, tested=())  # the cached metrics.csv rows
    metrics = evaluate(run.model, run.dataset.test_images)
    figures = {p.name: p.read_bytes() for p in plots.save_figures(run, grid=3)}
    doc = parse(render_report(run, metrics, None, figures))
    weights = text_of(doc.find(".//span[@id='weights-summary']"))
    assert weights == "best validation epoch 2 of 4, stopped early"
    final = doc.find(".//table[@id='final-metrics']")
    headers = [text_of(th) for th in final.findall(".//th")]
    assert headers[1:3] == ["train (epoch 2)", "validation (epoch 2, as logged)"]
    assert not any(h.startswith("test (epoch") for h in headers)
    assert "30.0000" in text_of(final) and "nan" not in text_of(final).lower()
    epochs = doc.find(".//table[@id='epochs']")
    assert "test_loss" not in text_of(epochs.find(".//thead")) and "val_loss" in text_of(epochs)
    cards = text_of(doc.find(".//div[@class='cards']"))
    assert f"test loss (saved weights) {metrics.loss:.4f}" in cards
    curves = doc.find(".//figure[@id='learning_curves']/img").get("alt")
    assert curves.startswith("Train (blue), validation (green)")
    kept = text_of(doc.find(".//table[@id='selection']"))
    assert "best_epoch 2" in kept and "stopped_early True" in kept


def test_epochs_not_tested_are_dashes_in_the_per_epoch_table(rgb_run):
    run = replace(rgb_run)
    run.__dict__["history"] = validated_history(3, tested=(3,))
    html = epochs_table(run.history)
    doc = parse(f"<!DOCTYPE html><html lang='en'><title>t</title>{html}</html>")
    first, last = (text_of(row) for row in doc.findall(".//tbody/tr")[::2])
    assert "\u2014" in first and "\u2014" not in last
    assert selection_sentence(None, 3) == "last epoch (3)"
