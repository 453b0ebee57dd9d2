"""Hyperparameter declarations: every model declares its parameters once; fit, set_params, load and the CLI
check them there."""

import json
import re

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

import advrec.models  # noqa: F401  (registers the models)
from advrec.cli import app
from advrec.errors import ConfigError, ModelFileError
from advrec.experiment import build_model, load_config, parse_assignments
from advrec.io import PARAMS_FILE
from advrec.models import BPRMF, CFGAN, EASE, GFCF, IALS, IRGAN, ItemKNN, MultVAE, RecVAE, TextKNN
from advrec.models.base import _REGISTRY, Recommender
from advrec.models.params import (
    RANDOM_STATE,
    Interval,
    Options,
    TupleOf,
    allowed_text,
    coerce,
    declare,
    validate_params,
)

MODELS = sorted(_REGISTRY)


def binary_matrix(n_users: int = 20, n_items: int = 15) -> sp.csr_matrix:
    X = sp.random(n_users, n_items, density=0.3, format="csr", random_state=0)
    X.data[:] = 1.0
    return X


def test_every_model_is_registered():
    expected = {"Pop", "ItemKNN", "EASE", "GFCF", "BSPM", "SANSA", "IALS", "BPRMF", "MultVAE", "CFGAN", "IRGAN"}
    assert expected | {"TextEASE", "TextKNN", "GenreAffinity"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_declaration_covers_exactly_the_constructor_parameters(name):
    cls = _REGISTRY[name]
    assert set(cls._parameter_constraints) == set(cls._param_names())


@pytest.mark.parametrize("name", MODELS)
def test_every_default_is_valid(name):
    _REGISTRY[name]()._validate_params()


# ------------------------------------------------------------------ constraint kinds
@pytest.mark.parametrize(
    ("constraint", "good", "bad"),
    [
        (Interval(int, 1, None, closed="left"), [1, 7, np.int64(3)], [0, -1, 1.0, True, "1", None]),
        (Interval(float, 0, None, closed="neither"), [1e-9, 3, 2.5, np.float32(1)], [0, -1.0, np.inf, np.nan, False]),
        (Interval(float, 0, 1, closed="right"), [1, 0.5], [0, 1.01]),
        (Interval(float, 0, 1, closed="left"), [0, 0.99], [1, -0.1]),
        (Interval(float, 0, 1, closed="both"), [0, 1], [1.5]),
        (Options({"a", "b"}), ["a", "b"], ["c", None, 1]),
        (TupleOf(int, low=1), [(400,), [400, 200], ()], [(0,), (1.5,), (True,), "400", 400]),
        (TupleOf(str, min_len=1), [("title",), ["a", "b"]], [(), (1,), "title"]),
        (
            TupleOf(float, low=0.0, min_len=3, max_len=3),
            [(0.1, 0.2, 0.7), [1, 0.5, 0.0], (np.float32(0.5), 0.25, 0.25)],
            [
                (0.1, 0.2),
                (0.1, 0.2, 0.3, 0.4),
                (-0.1, 0.5, 0.6),
                (np.nan, 0.5, 0.5),
                (np.inf, 0, 0),
                (True, 0, 0),
                "0.1",
            ],
        ),
    ],
)
def test_constraint_kinds(constraint, good, bad):
    for value in good:
        validate_params("M", {"p": [constraint]}, {"p": value})
    for value in bad:
        with pytest.raises(ConfigError, match=rf"^M: p must be {re.escape(str(constraint))}, got "):
            validate_params("M", {"p": [constraint]}, {"p": value})


def test_plain_types_and_none():
    spec = {"n": [int, None], "x": [float], "flag": [bool], "s": [str], "rs": RANDOM_STATE}
    validate_params("M", spec, {"n": None, "x": 3, "flag": True, "s": "cpu", "rs": np.random.default_rng(0)})
    for name, value in [("n", True), ("n", 1.5), ("x", "1"), ("flag", 1), ("s", None), ("rs", -1), ("rs", 1.5)]:
        with pytest.raises(ConfigError, match=rf"^M: {name} must be .*, got "):
            validate_params("M", spec, {name: value})
    assert allowed_text(spec["n"]) == "an int or None"


def test_messages_name_the_model_parameter_value_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"^BPRMF: factors must be an int in \[1, inf\), got -1$"):
        BPRMF(factors=-1)._validate_params()
    with pytest.raises(ConfigError, match=r"^BPRMF: epochs must be an int in \[1, inf\), got True$"):
        BPRMF(epochs=True)._validate_params()
    with pytest.raises(ConfigError, match=r"^GFCF: max_neighbors must be an int in \[1, inf\) or None, got 0$"):
        GFCF(max_neighbors=0)._validate_params()
    with pytest.raises(ConfigError, match=r"^IALS: solver must be one of 'cg', 'cholesky', got 'lu'$"):
        IALS(solver="lu")._validate_params()
    with pytest.raises(ConfigError, match=r"^CFGAN: g_hidden must be a tuple of ints ≥ 1, got \(400, 0\)$"):
        CFGAN(g_hidden=(400, 0))._validate_params()


def test_declare_merges_and_drops():
    base = {"a": [int], "b": [str]}
    assert declare(base, drop=("b",), c=[None]) == {"a": [int], "c": [None]}
    with pytest.raises(TypeError):
        declare(x=["not a constraint"])
    assert "loss" not in IRGAN._parameter_constraints and "loss" in CFGAN._parameter_constraints


# ------------------------------------------------------------------ where values are checked
@pytest.mark.parametrize(
    ("model", "name"),
    [
        (ItemKNN(k=0), "k"),
        (EASE(l2=-1.0), "l2"),
        (BPRMF(factors=0, epochs=1), "factors"),
        (MultVAE(dropout=1.0, epochs=1), "dropout"),
        (IALS(reg_scaling="log"), "reg_scaling"),
        (GFCF(alpha=-0.1), "alpha"),
    ],
)
def test_fit_validates(model, name):
    X = binary_matrix()
    with pytest.raises(ConfigError, match=rf"{type(model).__name__}: {name} must be"):
        model.fit(X)


def test_construction_does_not_validate():
    assert IALS(factors=0).factors == 0  # scikit-learn's rule: checked at fit


def test_set_params_validates_before_setting():
    model = EASE()
    with pytest.raises(ConfigError, match=r"^EASE: l2 must be a float in \(0, inf\), got 0$"):
        model.set_params(l2=0)
    assert model.l2 == 1000.0
    assert model.set_params(l2=5).l2 == 5
    with pytest.raises(ConfigError, match="no parameter"):
        model.set_params(alpha=1)


def test_load_refuses_a_crafted_bad_value(tmp_path):
    folder = ItemKNN(k=3).fit(binary_matrix()).save(tmp_path / "m")
    header = json.loads((folder / PARAMS_FILE).read_text())
    header["params"]["k"] = -5
    (folder / PARAMS_FILE).write_text(json.dumps(header))
    with pytest.raises(ModelFileError, match=rf"{PARAMS_FILE}: the parameters of ItemKNN are refused: .*k must be"):
        Recommender.load(folder)


# ------------------------------------------------------------------ command-line text
def test_coerce_reads_declared_types():
    c = CFGAN._parameter_constraints
    assert coerce(c, "g_hidden", "400,200") == (400, 200)
    assert coerce(c, "g_hidden", "[400, 200]") == (400, 200)
    assert coerce(c, "g_hidden", "(400,)") == (400,)
    assert coerce(c, "lr_d", "none") is None and coerce(c, "lr_d", "None") is None
    assert coerce(c, "lr_d", "1e-3") == 1e-3
    assert coerce(c, "lr", "1") == 1.0 and isinstance(coerce(c, "lr", "1"), float)
    assert coerce(c, "epochs", "3") == 3 and coerce(c, "verbose", "true") is True
    assert coerce(c, "random_state", "7") == 7 and coerce(c, "random_state", "none") is None
    assert coerce(c, "loss", "wgan-gp") == "wgan-gp" and coerce(c, "checkpoint_dir", "runs/x") == "runs/x"
    assert coerce(TextKNN._parameter_constraints, "columns", "title,genres") == ("title", "genres")
    assert coerce(RecVAE._parameter_constraints, "mixture", "0.2, 0.7, 0.1") == (0.2, 0.7, 0.1)


@pytest.mark.parametrize(
    ("model", "name", "text", "message"),
    [
        (EASE, "l2", "abc", r"^EASE: l2 must be a float in \(0, inf\), got 'abc'$"),
        (BPRMF, "epochs", "abc", r"^BPRMF: epochs must be an int in \[1, inf\), got 'abc'$"),
        (BPRMF, "epochs", "1.5", r"^BPRMF: epochs must be an int in \[1, inf\), got '1.5'$"),
        (BPRMF, "factors", "-1", r"^BPRMF: factors must be an int in \[1, inf\), got -1$"),
        (BPRMF, "optimizer", "foo", r"^BPRMF: optimizer must be one of 'adagrad', 'adam', 'sparse_adam', got 'foo'$"),
        (EASE, "l2", "none", r"^EASE: l2 must be a float in \(0, inf\), got 'none'$"),
        (CFGAN, "g_hidden", "400,x", r"^CFGAN: g_hidden must be a tuple of ints ≥ 1, got '400,x'$"),
        (RecVAE, "mixture", "0.5,0.5", r"^RecVAE: mixture must be a 3-item tuple of floats ≥ 0, got \(0.5, 0.5\)$"),
    ],
)
def test_coerce_refuses_with_one_line(model, name, text, message):
    with pytest.raises(ConfigError, match=message):
        coerce(model._parameter_constraints, name, text, owner=model.__name__)


def test_parse_assignments_with_a_model_and_build_model():
    assert parse_assignments(["g_hidden=400,200", "lr_d=none"], model="CFGAN") == {"g_hidden": (400, 200), "lr_d": None}
    model = build_model("CFGAN", {"g_hidden": [400, 200], "d_hidden": "64"})
    assert model.g_hidden == (400, 200) and model.d_hidden == (64,)
    with pytest.raises(ConfigError, match=r"^cfg: BPRMF: optimizer must be one of"):
        build_model("BPRMF", {"optimizer": "foo"}, source="cfg")
    with pytest.raises(ConfigError, match=r"^cfg: BPRMF: factors must be an int in \[1, inf\), got 0$"):
        build_model("BPRMF", {"factors": 0}, source="cfg")


def test_toml_params_follow_the_model_named_on_the_command_line(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text("[params]\nfactors = 32\n")
    assert load_config(f, model="BPRMF").params == {"factors": 32}
    with pytest.raises(ConfigError, match="EASE has no parameter 'factors'"):
        load_config(f)


# ------------------------------------------------------------------ the CLI: one line, exit code 2, no data loaded
runner = CliRunner()


@pytest.mark.parametrize(
    ("model", "assignment", "message"),
    [
        ("EASE", "l2=abc", "EASE: l2 must be a float in (0, inf), got 'abc'"),
        ("BPRMF", "epochs=abc", "BPRMF: epochs must be an int in [1, inf), got 'abc'"),
        ("BPRMF", "factors=-1", "BPRMF: factors must be an int in [1, inf), got -1"),
        ("BPRMF", "optimizer=foo", "BPRMF: optimizer must be one of 'adagrad', 'adam', 'sparse_adam', got 'foo'"),
    ],
)
def test_cli_set_errors_are_one_line(tmp_path, model, assignment, message):
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", model, "--set", assignment, "--out", str(out), "--data-dir", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output and res.output.startswith("error: ")
    assert message in " ".join(res.output.split()), res.output
    assert not out.exists()


@pytest.mark.integration
def test_cli_toml_without_model_uses_the_command_line_model(tmp_path, data_dir):
    f = tmp_path / "exp.toml"
    f.write_text("[params]\nfactors = 0\n")
    res = runner.invoke(app, ["train", "BPRMF", "--config", str(f), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "BPRMF: factors must be an int in [1, inf), got 0" in " ".join(res.output.split()), res.output
    f.write_text('protocol = "leave_one_out"\n[params]\nfactors = 4\nepochs = 1\n')
    args = ["train", "BPRMF", "--config", str(f), "--out", str(tmp_path / "r"), "--data-dir", str(data_dir)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["model"]["class"] == "BPRMF" and manifest["model"]["params"]["factors"] == 4
