"""Config files (JSON, YAML, TOML), options laid over them, and re-running an earlier run."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.bad_input_cases import csv_pair
from vaelab import rundir
from vaelab.config import DataConfig, RunConfig
from vaelab.config_files import config_from_sections, load_config_file
from vaelab.errors import VaelabError

YAML = """
model:
  latent_dim: 3
  hidden: [16, 8]
data:
  val_split: 0.2
train:
  epochs: 2
  lr: 0.002
  lr_schedule: constant
"""
TOML = """
[model]
latent_dim = 3
hidden = [16, 8]

[data]
val_split = 0.2

[train]
epochs = 2
lr = 0.002
lr_schedule = "constant"
"""
JSON = json.dumps(
    {
        "model": {"latent_dim": 3, "hidden": [16, 8]},
        "data": {"val_split": 0.2},
        "train": {"epochs": 2, "lr": 0.002, "lr_schedule": "constant"},
    }
)


def test_json_yaml_and_toml_give_the_same_config(tmp_path):
    configs = []
    for name, text in (("c.yaml", YAML), ("c.toml", TOML), ("c.json", JSON)):
        (tmp_path / name).write_text(text)
        configs.append(load_config_file(tmp_path / name))
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].model.latent_dim == 3 and configs[0].data.val_split == 0.2
    assert configs[0].train.batch_size == RunConfig().train.batch_size  # the rest: defaults


def test_a_runs_config_json_is_a_config_file(tmp_path, tiny_dataset):
    from vaelab.config import ModelConfig, TrainConfig
    from vaelab.training import train

    config = RunConfig(model=ModelConfig(hidden=(8, 4)), train=TrainConfig(epochs=1, batch_size=32))
    train(config, tiny_dataset, run_dir=tmp_path / "r", log=None)
    again = load_config_file(tmp_path / "r" / "config.json")
    assert again == rundir.load_config(tmp_path / "r")


def test_options_on_the_command_line_override_the_file(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(YAML)
    printed = cli("train", "--config", "c.yaml", "--epochs", 5, "--beta", 2, "--print-config")
    assert printed.code == 0, printed.err
    config = RunConfig.from_dict(json.loads(printed.out))
    assert (config.train.epochs, config.train.beta, config.train.lr) == (5, 2.0, 0.002)
    assert config.model.hidden == (16, 8) and config.data.val_split == 0.2
    assert not (tmp_path / "runs").exists()  # --print-config trains nothing


def test_from_reruns_a_run_with_another_seed(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    train_csv, test_csv = csv_pair(tmp_path)
    options = ["--epochs", 1, "--batch-size", 50, "--hidden", "8,4", "--lr", 0.003]
    data = ["--train-csv", train_csv, "--test-csv", test_csv]
    first = cli("train", *options, *data, "--name", "a", "--no-plots")
    assert first.code == 0, first.err
    again = cli("train", "--from", "runs/a", "--seed", 7, "--name", "b", "--no-plots")
    assert again.code == 0, again.err
    a, b = rundir.load_config(tmp_path / "runs" / "a"), rundir.load_config(tmp_path / "runs" / "b")
    assert b.train.seed == 7 and b.train.lr == 0.003 and b.model.hidden == (8, 4)
    assert b.data == a.data


def test_resume_refuses_a_config_file(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(YAML)
    refused = cli("train", "--resume", "runs/x", "--config", "c.yaml")
    assert refused.code == 2 and "drop --config" in refused.err


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_an_empty_section_means_the_defaults(tmp_path, suffix):
    text = {".yaml": "model: {}\n", ".toml": "[model]\n", ".json": '{"model": {}}'}[suffix]
    (tmp_path / f"c{suffix}").write_text(text)
    assert load_config_file(tmp_path / f"c{suffix}") == RunConfig()


# ---------------------------------------------------------------- relative paths


def test_relative_paths_are_read_from_the_config_files_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.toml").write_text(
        '[data]\nsource = "images.npy"\ntest_source = "../held/test.npy"\ndata_dir = "/srv/data"\n'
    )
    monkeypatch.chdir(tmp_path)
    data = load_config_file("conf/c.toml").data
    assert data.source == "conf/images.npy"
    assert data.test_source == "conf/../held/test.npy"
    assert data.data_dir == "/srv/data"  # absolute: as written
    monkeypatch.chdir(tmp_path / "conf")
    assert load_config_file(tmp_path / "conf" / "c.toml").data.source == str(
        tmp_path / "conf" / "images.npy"
    )


def test_a_builtin_name_stays_a_name_and_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "c.yaml").write_text("data:\n  source: mnist\n  data_dir: ~/datasets\n")
    data = load_config_file(tmp_path / "c.yaml").data
    assert data.source == "mnist"
    assert data.data_dir == str(tmp_path / "home" / "datasets")


def test_print_config_names_each_relative_path_and_where_it_leads(tmp_path, monkeypatch, cli):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.yaml").write_text("data:\n  source: images.npy\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    printed = cli("train", "--config", "../conf/c.yaml", "--print-config")
    assert printed.code == 0, printed.err
    assert json.loads(printed.out)["data"]["source"] == str(tmp_path / "conf" / "images.npy")
    assert printed.err.strip() == (
        f"../conf/c.yaml: data.source images.npy is relative to the config file's folder: "
        f"{tmp_path / 'conf' / 'images.npy'}"
    )


def test_a_path_given_as_an_option_stays_relative_to_the_working_directory(
    tmp_path, monkeypatch, cli
):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.yaml").write_text("data:\n  source: images.npy\n")
    monkeypatch.chdir(tmp_path)
    printed = cli("train", "--config", "conf/c.yaml", "--data", "mine.npy", "--print-config")
    assert printed.code == 0, printed.err
    assert json.loads(printed.out)["data"]["source"] == str(tmp_path / "mine.npy")


# ---------------------------------------------------------------- a run's record


def test_a_runs_config_json_without_a_section_is_refused(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"latent_dim": 3}, "train": {}}))
    with pytest.raises(VaelabError, match=r"r/config.json: lacks its data section\(s\)"):
        rundir.load_config(run)
    (run / "config.json").write_text(json.dumps({"model": {}, "data": {}, "train": {}}))
    assert rundir.load_config(run) == RunConfig()


def test_a_config_file_that_records_a_run_needs_every_section(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {}, "train": {}, "device": "cpu"}))
    with pytest.raises(VaelabError, match=r"config.json: lacks its data section\(s\)"):
        load_config_file(path)
    path.write_text(json.dumps({"model": {}, "train": {}}))  # a user's file: defaults apply
    assert load_config_file(path) == RunConfig()


# ---------------------------------------------------------------- malformed files

WRONG_VALUES = [
    None, [], {}, "x", "", 1e400, float("nan"), 10**400, -1, True, [[1]], [1, "a"], {"a": 1},
    [None], [[]] * 3, 2**63, "\0", "\u202e",
]  # fmt: skip


def _one_line_from(path, error: VaelabError) -> None:
    message = str(error)
    assert "\n" not in message and message.startswith(f"{path}: "), message


@pytest.mark.parametrize("section", ["model", "data", "train"])
def test_every_field_given_every_wrong_value_is_one_line(tmp_path, section):
    """Each field of each section set to values of every type: the config is built, or refused
    in one line that names the file and the field; never another exception."""
    default = {"model": RunConfig().model, "data": RunConfig().data, "train": RunConfig().train}
    path = tmp_path / "c.json"
    for field in default[section].__dataclass_fields__:
        for value in WRONG_VALUES:
            text = json.dumps({section: {field: value}}, allow_nan=True)
            path.write_text(text)
            try:
                load_config_file(path)
            except VaelabError as exc:
                _one_line_from(path, exc)
                assert f"{section}." in str(exc) or f"{section}:" in str(exc), str(exc)


MALFORMED = {
    "empty.yaml": "",
    "null-sections.yaml": "model:\ndata:\ntrain:\n",
    "list-section.yaml": "model:\n  - latent_dim: 3\n",
    "scalar-section.toml": "model = 3\n",
    "table-array.toml": "[[data]]\nsource = 'x'\n",
    "string-section.json": '{"train": "fast"}',
    "nested.json": '{"model": {"hidden": ' + "[" * 900 + "]" * 900 + "}}",
    "nested.toml": "[model]\nhidden = " + "[" * 5000 + "]" * 5000 + "\n",
    "nested-table.toml": "".join(f"[{'.'.join(['a'] * n)}]\n" for n in range(1, 300)),
    "nested.yaml": "model: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    "keys.yaml": "? [a, b]\n: 1\n",
    "none-key.yaml": "~: 1\nmodel: {}\n",
    "mixed-keys.yaml": "model: {1: 2, latent_dim: 3, null: 4}\n",
    "aliases.yaml": "a: &a [1, 1, 1, 1]\nmodel: {hidden: [*a, *a, *a]}\n",
    "date.toml": "[train]\nepochs = 1979-05-27\n",
    "bad-date.toml": "[train]\nepochs = 1979-13-27\n",
    "bad-date.yaml": "train: {epochs: 1979-13-27}\n",
    "binary.yaml": "train: {lr: !!binary aGVsbG8=}\n",
    "set.yaml": "data: {class_names: !!set {a, b}}\n",
    "long-int.yaml": "train: {lr: 1" + "0" * 5000 + "}\n",
    "inf.yaml": "train: {beta: .inf, lr: .nan}\n",
    "bool-int.toml": "[model]\nlatent_dim = true\n",
    "float-split.json": '{"data": {"test_split": 1.0}}',
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_config_file_is_one_line_naming_it(tmp_path, name):
    path = tmp_path / name
    path.write_text(MALFORMED[name])
    with pytest.raises(VaelabError) as refused:
        load_config_file(path)
    _one_line_from(path, refused.value)


# ---------------------------------------------------------------- numbers that read two ways


@pytest.mark.parametrize("field", ["test_split", "val_split"])
def test_a_split_of_1_0_is_refused_with_both_readings(field):
    with pytest.raises(VaelabError, match=rf"{field} 1.0 could mean all the images \(100%\) or "
                       r"1 image: write 1 for one image") as refused:  # fmt: skip
        DataConfig(**{field: 1.0})
    assert refused.value.parameters == (field,)


@pytest.mark.parametrize(("value", "field"), [(1, "test_split"), (0.5, "test_split"),
                                              (200.0, "test_split"), (0, "val_split")])  # fmt: skip
def test_a_split_that_reads_one_way_is_taken(value, field):
    assert getattr(DataConfig(**{field: value}), field) == value


def test_test_split_1_0_on_the_command_line_is_refused(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    refused = cli("train", "--test-split", "1.0", "--print-config")
    assert refused.code == 2
    assert refused.err.startswith("vaelab: error: --test-split 1.0 could mean all the images")
    taken = cli("train", "--test-split", "1", "--print-config")
    assert taken.code == 0 and json.loads(taken.out)["data"]["test_split"] == 1


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
    st.sampled_from(["mlp", "conv", "gaussian", "mnist", "auto", "1.0"]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
FIELDS = sorted({f for part in (RunConfig().model, RunConfig().data, RunConfig().train)
                 for f in part.__dataclass_fields__})  # fmt: skip


@pytest.mark.slow
@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.dictionaries(
        st.sampled_from(["model", "data", "train", "other"]),
        VALUES | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), VALUES),
    )
)
def test_any_parsed_structure_is_a_config_or_one_line(raw):
    """Whatever a JSON, YAML or TOML parser can return: a config, or one line naming the file."""
    try:
        config_from_sections(raw, "c.yaml")
    except VaelabError as exc:
        _one_line_from("c.yaml", exc)


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("c.json", '{"train": {"epochs": 1, "epochs": 5}}', ""),
        ("c.yaml", "train:\n  epochs: 1\n  epochs: 5\n", "line 3: "),
        ("c.yaml", "model: {}\ntrain: {epochs: 1}\ntrain: {lr: 0.1}\n", "line 3: "),
    ],
)
def test_a_key_given_twice_is_refused_not_settled_by_the_last(tmp_path, name, text, line):
    (tmp_path / name).write_text(text)
    with pytest.raises(VaelabError, match=f"{name}: {line}not valid (JSON|YAML) .the key '"):
        load_config_file(tmp_path / name)


def test_a_yaml_merge_may_still_override_the_keys_it_brings(tmp_path):
    text = "train:\n  <<: &base {epochs: 1, lr: 0.01}\n  epochs: 3\n"
    (tmp_path / "c.yaml").write_text(text)
    config = load_config_file(tmp_path / "c.yaml")
    assert (config.train.epochs, config.train.lr) == (3, 0.01)


@pytest.mark.parametrize(
    ("name", "text"),
    [("c.json", '{"train": {"epochs": 3}}'), ("c.yaml", "train: {epochs: 3}\n"),
     ("c.toml", "[train]\nepochs = 3\n")],
)  # fmt: skip
def test_a_byte_order_mark_an_editor_left_is_skipped(tmp_path, name, text):
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_config_file(tmp_path / name).train.epochs == 3
