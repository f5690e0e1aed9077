"""Every shipped gin file parses and builds, alone and with debug.gin; mistakes are explained."""

from __future__ import annotations

from pathlib import Path

import gin
import pytest

from epgkit.method.experiment import Experiment
from epgkit.run import config

CONFIGS = config.experiments()
# clusters/ say where to run, not what: tests/test_clusters.py and test_where.py parse them.
FRAGMENTS = [c for c in config.available() if "/" in c and not c.startswith("clusters/")]
CLUSTERS = [c for c in config.available() if c.startswith("clusters/")]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("with_debug", [False, True])
def test_config_parses_and_builds_an_experiment(name, with_debug):
    files = [name, "debug.gin"] if with_debug else [name]
    config.parse(files)
    exp = config.build(Experiment)
    assert exp.inner.phi_size() > 0
    if with_debug:
        assert exp.epochs <= 3 and exp.inner.steps <= 256


def test_debug_shrinks_every_experiment_but_keeps_its_env_loss_and_policy():
    # What debug.gin's header promises: only sizes change (the window N, hence φ's size).
    for name in CONFIGS:
        config.parse([name])
        full = config.build(Experiment).inner
        config.parse([name, "debug.gin"])
        debug = config.build(Experiment).inner
        assert (debug.env_id, debug.loss, debug.policy) == (full.env_id, full.loss, full.policy)


def test_config_files_resolve_by_name_and_path():
    shipped = config.GIN_DIR / "quickstart.gin"
    for name in ("quickstart", "quickstart.gin", str(shipped)):
        assert config.resolve(name).resolve() == shipped.resolve()
    with pytest.raises(config.ConfigError, match="quickstart.gin"):
        config.resolve("quickstrat.gin")


def test_unknown_configurable_names_file_line_and_close_names(tmp_path: Path):
    bad = tmp_path / "bad.gin"
    bad.write_text("include 'base.gin'\n\nOpenES.sigma = 0.1\nOpenEs.sigma = 0.1\n")
    with pytest.raises(config.ConfigError) as err:
        config.parse([bad])
    text = str(err.value)
    assert "bad.gin" in text and "4" in text and "OpenES" in text


def test_a_bracket_left_open_is_blamed_on_its_own_file_or_binding(tmp_path: Path):
    bad = tmp_path / "bad.gin"
    bad.write_text("include 'quickstart.gin'\nInnerLoop.lr = (0.1\n")
    with pytest.raises(config.ConfigError, match=f"^unbalanced brackets in {bad}: EOF"):
        config.parse([bad, "debug.gin"])
    with pytest.raises(config.ConfigError, match="^unbalanced brackets in the binding 'A = \\['"):
        config.parse(["quickstart.gin"], ["InnerLoop.lr = 1", "A = ["])


@pytest.mark.parametrize(
    "bindings,message",
    [
        (["InnerLoop.lr = 1", "InnerLoop.steps = "], "(the binding 'InnerLoop.steps = ')"),
        # Left open, it makes gin read on into the next binding, where it fails.
        (["InnerLoop.lr = (1", "InnerLoop.steps = 64"], "(the binding 'InnerLoop.lr = (1')"),
        # A recorded config comes as one binding of many lines, some of them brackets open
        # only within it; the user's bad binding after it is the one named.
        (
            ["OpenES.sigma = (0.1,\n     0.2)\nInnerLoop.lr = 1", "-b"],
            "(the binding '-b')",
        ),
        (
            ["InnerLoop.lr = 1\nInnerLoop.steps 64\nOpenES.sigma = 2"],
            "(the binding 'InnerLoop.steps 64')",
        ),
    ],
)
def test_a_binding_gin_cannot_read_is_named(bindings, message):
    with pytest.raises(config.ConfigError) as err:
        config.parse(["quickstart.gin"], bindings)
    assert str(err.value).endswith(message)


@pytest.mark.parametrize(
    "binding,close,known",
    [
        ("InnerLoop.loss = @EPGLos()", "EPGLoss", "Known losses: "),
        ("InnerLoop.guide = @ppo/PPOLos()", "PPOLoss", "Known losses: "),
        ("InnerLoop.policy = @GausianMLP()", "GaussianMLP", "Known policies: "),
        ("OpenEs.sigma = 0.1", "OpenES", "Known strategies: "),
        ("InnerLoop.loss = @Zzz()", None, "Known configurables: Experiment, Launch, TestTime; "),
    ],
)
def test_unknown_references_list_close_and_known_names(tmp_path: Path, binding, close, known):
    bad = tmp_path / "bad.gin"
    bad.write_text(f"include 'quickstart.gin'\n{binding}\n")
    with pytest.raises(config.ConfigError) as err:
        config.parse([bad])
    text = str(err.value)
    assert f"bad.gin, line 2: {binding})" in text and "\n" not in text  # one line for a terminal
    if close:
        assert f"Did you mean {close}" in text
    else:
        assert "Did you mean" not in text
    line = text[text.index(known) :]
    assert close in line if close else all(n in line for n in ("EPGLoss", "GaussianMLP", "OpenES"))


def test_syntax_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "broken.gin"
    bad.write_text("Experiment.epochs = (3\n")
    with pytest.raises(config.ConfigError, match="broken.gin"):
        config.parse([bad])


def test_invalid_values_are_config_errors():
    config.parse(["quickstart.gin"], ["Experiment.inner_loops = 30"])
    with pytest.raises(config.ConfigError, match="multiple of the ES population"):
        config.build(Experiment)
    config.parse(["quickstart.gin"], ["OpenES.sigma = 0.0"])
    with pytest.raises(config.ConfigError, match="sigma"):
        config.build(Experiment)


def test_bindings_override_files_and_land_in_the_config_string():
    config.parse(["quickstart.gin"], ["OpenES.sigma = 0.123"])
    assert config.build(Experiment).strategy.sigma == 0.123
    assert "OpenES.sigma = 0.123" in gin.config_str()


@pytest.mark.parametrize("fragment", FRAGMENTS)
def test_fragments_apply_on_top_of_an_experiment(fragment):
    # debug.gin last, as its header says: it shrinks what a fragment sets too (the ES's V); a U
    # of 1,024 holds whole rollouts of every tuned baseline (M ≤ 512).
    config.parse(["quickstart.gin", fragment, "debug.gin"], ["InnerLoop.steps = 1024"])
    exp = config.build(Experiment)
    assert exp.baselines and all(b.guide is None for b in exp.baselines.values())
    for loop in exp.baselines.values():
        assert loop.env_id == exp.inner.env_id and loop.steps == exp.inner.steps


@pytest.mark.parametrize("fragment", CLUSTERS)
def test_cluster_fragments_choose_a_cluster_and_change_no_result(fragment):
    from epgkit.run.cluster import Cluster, Launch

    config.parse(["quickstart.gin", "debug.gin"])
    before = config.build(Experiment)
    # What a cluster requires (a scheduler's address, a worker image) is given as a user would.
    required = ["Scheduler.address = 'tcp://h:8786'", "KubeCluster.image = 'epgkit:test'"]
    config.parse(["quickstart.gin", "debug.gin"], [f"include '{fragment}'", *required])
    cluster = config.build(Launch).where()
    assert isinstance(cluster, Cluster) and cluster.describe()
    assert config.build(Experiment) == before


def test_the_scheduler_fragment_requires_an_address():
    with pytest.raises(config.ConfigError, match="does not set Scheduler.address.*--scheduler"):
        config.parse(["quickstart.gin", "clusters/scheduler.gin"])
        config.build(config.gin.get_configurable("Launch"))


def test_an_include_cycle_is_named_in_one_message(tmp_path):
    from typer.testing import CliRunner

    from epgkit.cli import app

    a, b = tmp_path / "a.gin", tmp_path / "b.gin"
    a.write_text(f"include '{b}'\n")
    b.write_text(f"include '{a}'\n")
    with pytest.raises(config.ConfigError) as caught:
        config.parse([a])
    assert str(caught.value).startswith(f"gin include cycle: {a} includes {b} includes {a};")
    result = CliRunner().invoke(app, ["evolve", str(a), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == f"epgkit: error: {caught.value}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("spelling", ["gin/debug.gin", "debug.gin"])
def test_a_users_config_includes_a_shipped_one_from_any_folder(tmp_path, monkeypatch, spelling):
    mine = tmp_path / "mine.gin"
    mine.write_text(f"include 'gin/quickstart.gin'\ninclude '{spelling}'\n")
    monkeypatch.chdir(tmp_path)  # no gin/ here: the shipped files are found by the package
    config.parse([mine])
    assert gin.query_parameter("Experiment.epochs") == 2  # debug.gin's, over quickstart.gin's


def test_a_binding_in_a_scope_nothing_calls_is_refused_naming_the_close_one():
    # Gin takes any scope: `ppoo/InnerLoop.lr` was silently a binding of nothing.
    with pytest.raises(config.ConfigError) as err:
        config.parse(["quickstart.gin"], ["ppoo/InnerLoop.lr = 0.05"])
    text = str(err.value)
    assert "'ppoo/InnerLoop.lr = 0.05'" in text and "did you mean 'ppo'?" in text
    config.parse(["quickstart.gin"], ["ppo/InnerLoop.lr = 0.05"])  # the scope the config calls
    assert gin.query_parameter("ppo/InnerLoop.lr") == 0.05


def test_an_undefined_macro_is_one_short_line():
    # Gin's message went on with the whole config, some 3,000 characters.
    with pytest.raises(config.ConfigError) as err:
        config.parse(["quickstart.gin"], ["InnerLoop.lr = %MY_LR"])
        config.experiment()
    assert str(err.value).startswith("the macro %MY_LR is used but never defined")
    assert len(str(err.value)) < 200
