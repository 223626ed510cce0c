"""The Python API (issue 20, point 1): Study over a spec built from a dict or TOML text, the README's
example run as written, and the same one-line errors as a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nago_spec.errors import SpecError, StoreError
from nago_spec.spec import Spec, dump_toml, load_spec
from nago_spec.store import TrialState

REPO = Path(__file__).resolve().parents[1]


def readme_python_example(block: int = 0) -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[block]


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    study, manifest = namespace["study"], namespace["manifest"]
    trials = study.trials()
    assert len(trials) == 6 and all(t.state is TrialState.COMPLETE for t in trials)
    front = study.front()
    assert front and {t.id for t in front} <= {t.id for t in trials}
    assert manifest["models"] and all((study.directory / "models" / m["file"]).exists() for m in manifest["models"])
    out = capsys.readouterr().out
    assert all(f"{t.id} " in out for t in front)
    # reopened, it resumes: a larger budget adds only the new trials
    from nago_spec import Study

    again = Study.open(tmp_path / "runs" / "notebook").optimize(budget=7, backend="local", progress="quiet")
    assert [t.id for t in again.trials()] == [*range(7)]
    assert [t.values for t in again.trials()[:6]] == [t.values for t in trials]


def test_a_spec_from_text_or_a_dict_equals_the_file():
    path = REPO / "specs" / "quickstart.toml"
    from_file = load_spec(path)
    from_text = load_spec(text=path.read_text(), base_dir=path.parent)
    from_dict = Spec.from_dict(from_file.to_dict())
    assert from_text.key() == from_file.key() == from_dict.key()
    assert from_text.name == from_dict.name == "quickstart"


@pytest.mark.parametrize(("make", "line"), [
    (lambda: Spec.from_dict({"version": 1, "train": {"epochs": "ten"}, "objectives": [{"name": "error"}]}),
     '<dict>: [train].epochs = "ten": must be a number > 0'),
    (lambda: load_spec(text='version = 1\n[[objectives]]\nname = "error"\n[train]\nepoch = 3\n'),
     "<text>: [train].epoch = 3: unknown key (did you mean 'epochs'?)"),
    (lambda: load_spec(text="version = = 1"), "<text>: invalid TOML: "),
    (lambda: Spec.from_dict(["not", "a", "mapping"]), "<dict>: a spec must be a mapping of its tables, not list"),
])
def test_a_dict_or_text_gets_the_file_s_one_line_errors(make, line):
    with pytest.raises(SpecError) as err:
        make()
    assert len(err.value.lines) == 1 and err.value.lines[0].startswith(line), err.value.lines


def test_create_refuses_another_search_in_the_directory_and_open_needs_a_run(tmp_path):
    from nago_spec import Study

    spec = load_spec(REPO / "specs" / "01_params_zdt1.toml")
    Study.create(spec, tmp_path / "run").optimize(budget=2, backend="local", progress="quiet")
    with pytest.raises(StoreError, match="holds a run of a different search"):
        Study.create(spec.with_overrides({"seed": 7}), tmp_path / "run")
    assert len(Study.create(spec.with_overrides({"seed": 7}), tmp_path / "run", force_new=True).trials()) == 0
    with pytest.raises(StoreError, match="not a run directory"):
        Study.open(tmp_path / "nowhere")


def test_a_run_directory_given_as_a_spec_says_how_to_resume(tmp_path):
    (tmp_path / "spec.toml").write_text("version = 1\n")
    with pytest.raises(SpecError, match=r"a directory, not a spec file \(to resume the run in it, give .*spec\.toml\)"):
        load_spec(tmp_path)


def zdt1(params):
    """ZDT1 on the params of a Study: a module-level function, so spawned workers can import it."""
    xs = [params[f"x{i}"] for i in range(1, 4)]
    g = 1 + 9 * sum(xs[1:]) / 2
    return {"f1": xs[0], "f2": g * (1 - (xs[0] / g) ** 0.5)}


def params_space(**extra):
    return {
        "version": 1, "name": "fn", "seed": 3,
        "space": {"kind": "params", "params": {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in (1, 2, 3)}},
        "objectives": [{"name": "f1"}, {"name": "f2"}],
        "search": {"strategy": "random", "budget": 6, "initial": 4, "batch": 2},
        **extra,
    }


def test_a_params_study_takes_a_python_function_in_process(tmp_path):
    from nago_spec import Study

    calls = []

    def f(params):  # a closure: fine in this process
        calls.append(params)
        return zdt1(params)

    study = Study.create(Spec.from_dict(params_space()), tmp_path / "run")
    study.optimize(f, backend="local", progress="quiet")
    trials = study.trials()
    assert len(trials) == 6 == len(calls) and all(t.state is TrialState.COMPLETE for t in trials)
    assert all(t.values == zdt1(t.params) for t in trials)
    assert study.front()
    # the function is not stored: resuming needs it again, and a larger budget adds only new trials
    again = Study.open(tmp_path / "run")
    with pytest.raises(SpecError, match=r"\[objectives\]\[0\]\.callable: missing: .*Study\.optimize"):
        again.optimize(budget=8, backend="local", progress="quiet")
    again.optimize(f, budget=8, backend="local", progress="quiet")
    assert [t.id for t in again.trials()] == [*range(8)] and len(calls) == 8


def test_a_function_on_the_process_pool_and_a_refused_lambda(tmp_path):
    from nago_spec import Study

    study = Study.create(Spec.from_dict(params_space(run={"backend": "process", "workers": 2})), tmp_path / "run")
    with pytest.raises(SpecError, match="cannot reach the process pool's workers.*backend=\"local\""):
        study.optimize(lambda p: zdt1(p), progress="quiet")
    assert study.trials() == []  # refused before any trial
    study.optimize(zdt1, progress="quiet")
    assert [t.state for t in study.trials()] == [TrialState.COMPLETE] * 6
    assert all(t.values == zdt1(t.params) for t in study.trials())


def test_a_spec_dict_may_hold_the_function_itself_and_the_file_never_does(tmp_path):
    from nago_spec import Study

    d = params_space()
    d["objectives"] = [{"name": "f1", "callable": zdt1}, {"name": "f2", "callable": zdt1}]
    study = Study.create(Spec.from_dict(d), tmp_path / "run")
    study.optimize(budget=3, backend="local", progress="quiet")  # a budget override keeps the functions
    assert [t.state for t in study.trials()] == [TrialState.COMPLETE] * 3
    assert "callable" not in (tmp_path / "run" / "spec.toml").read_text()
    study.optimize(budget=4, backend="local", progress="quiet")  # the study keeps them too
    assert len(study.trials()) == 4


def test_objectives_without_a_callable_are_refused_from_the_command_line(tmp_path, capsys):
    from nago_spec.runners.cli import main

    path = tmp_path / "open.toml"
    path.write_text((REPO / "specs" / "01_params_zdt1.toml").read_text().replace('callable = "problems.py:zdt1"', ""))
    for command in (["check", str(path)], ["run", str(path), "--out", str(tmp_path / "r"), "--progress", "quiet"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "[objectives][0].callable: missing:" in err[0], err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("make", "line"), [
    (lambda: Spec.from_dict({"version": 1, "objectives": [{"name": "error", "callable": len}]}),
     "<dict>: [objectives][0].callable = "),
    (lambda: Spec.from_dict(params_space()).with_function(3), "must be callable, not int"),
    (lambda: load_spec(REPO / "specs" / "01_params_zdt1.toml").with_function(zdt1), "every objective already names"),
    (lambda: load_spec(REPO / "specs" / "quickstart.toml").with_function(zdt1), "needs a plain-parameter space"),
])
def test_function_objectives_outside_their_place_are_one_line_errors(make, line):
    with pytest.raises(SpecError) as err:
        make()
    assert len(err.value.lines) == 1 and line in err.value.lines[0], err.value.lines


def test_an_open_objective_round_trips_through_the_file_with_its_cost():
    d = params_space()
    d["objectives"] = [{"name": "f1", "cheap": True}, {"name": "f2", "direction": "maximize", "ref": 2.0}]
    spec = Spec.from_dict(d)
    again = load_spec(text=dump_toml(spec))
    assert again.objectives == spec.objectives and again.key() == spec.key()
    assert [(o.cheap, o.direction, o.ref) for o in spec.objectives] == [(True, "minimize", None), (False, "maximize", 2.0)]


def test_the_readme_function_example_runs_as_written(tmp_path, monkeypatch):
    from nago_spec import Study

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"Study": Study, "Spec": Spec}  # imported by the section's first example
    exec(compile(readme_python_example(1), "README.md", "exec"), namespace)
    trials = namespace["study"].trials()
    assert len(trials) == 20 and all(t.state is TrialState.COMPLETE for t in trials)
    assert all(t.values == namespace["zdt1"](t.params) for t in trials)


# -- warm start ---------------------------------------------------------------------------------------


def bo_space(**search):
    return params_space(search={"strategy": "bo", "budget": 4, "initial": 8, "batch": 2, **search})


def test_a_warm_start_tells_bo_the_earlier_trials_in_toml_and_through_add_trials(tmp_path, capsys):
    from nago_spec import Study

    old = Study.create(Spec.from_dict(params_space(search={"strategy": "random", "budget": 12})), tmp_path / "old")
    old.optimize(zdt1, backend="local", progress="quiet")
    cold = Study.create(Spec.from_dict(bo_space()), tmp_path / "cold").optimize(zdt1, backend="local", progress="quiet")
    warm_toml = Study.create(Spec.from_dict(bo_space(warm_start=[str(tmp_path / "old")])), tmp_path / "warm")
    warm_toml.optimize(zdt1, backend="local", progress="plain")
    assert "warm start: 12 completed trial(s) of" in capsys.readouterr().err  # progress is on stderr
    added = Study.create(Spec.from_dict(bo_space()), tmp_path / "added")
    assert added.add_trials(old) == 12 and added.add_trials(tmp_path / "old") == 12  # not twice
    added.optimize(zdt1, backend="local", progress="quiet")
    # twelve complete trials are more than the initial design of 8: bo models from its first trial,
    # where the cold run takes Sobol points
    cold_points = [t.params for t in cold.trials()]
    assert [t.params for t in warm_toml.trials()] == [t.params for t in added.trials()]
    assert all(w.params not in cold_points for w in warm_toml.trials())
    # the warm start is part of the run: it resumes with it, and a larger budget goes on
    assert Study.open(tmp_path / "added").spec.search.warm_start == (tmp_path / "old",)
    again = Study.open(tmp_path / "added").optimize(zdt1, budget=6, backend="local", progress="quiet")
    assert [t.id for t in again.trials()] == [*range(6)]


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: d["space"]["params"]["x2"].update(high=2.0), "its space differs at x2.high: 1.0 there, 2.0 here"),
    (lambda d: d["space"]["params"].pop("x3"), "its space has x3, this one does not"),
    (lambda d: d["space"]["params"].update(x4={"type": "int", "low": 0, "high": 3}), "its space lacks x4"),
    (lambda d: d["objectives"].append({"name": "f3"}), "its trials did not measure 'f3'"),
    (lambda d: d["objectives"][1].update(direction="maximize"), "objective 'f2' is minimized there, maximized here"),
])
def test_an_incompatible_warm_start_is_refused_naming_what_differs(tmp_path, change, why):
    from nago_spec import Study

    Study.create(Spec.from_dict(params_space(search={"strategy": "random", "budget": 2})), tmp_path / "old").optimize(
        zdt1, backend="local", progress="quiet")
    d = bo_space()
    change(d)
    study = Study.create(Spec.from_dict(d), tmp_path / "new")
    with pytest.raises(SpecError) as err:
        study.add_trials(tmp_path / "old")
    assert len(err.value.lines) == 1 and f'[search].warm_start = "{tmp_path / "old"}": {why}' in err.value.lines[0]
    d["search"]["warm_start"] = [str(tmp_path / "old")]
    with pytest.raises(SpecError, match=re.escape(why)):  # the same from the spec, before its directory exists
        Study.create(Spec.from_dict(d), tmp_path / "new2")
    assert not (tmp_path / "new2").exists()


def test_warm_start_entries_must_be_run_directories(tmp_path):
    from nago_spec import Study

    (tmp_path / "empty").mkdir()
    for value, why in [("runs/old", "must be a list of run directories"),
                       (["a", "./a"], "names a run directory twice")]:
        with pytest.raises(SpecError) as err:
            Spec.from_dict(bo_space(warm_start=value), base_dir=tmp_path)
        assert len(err.value.lines) == 1 and "[search].warm_start = " in err.value.lines[0]
        assert why in err.value.lines[0], err.value.lines
    for missing in ("nowhere", "empty"):  # checked where the trials are read: before the run directory exists
        with pytest.raises(SpecError) as err:
            Study.create(Spec.from_dict(bo_space(warm_start=[missing]), base_dir=tmp_path), tmp_path / "new")
        assert len(err.value.lines) == 1
        assert f'[search].warm_start = "{tmp_path / missing}": not a run directory' in err.value.lines[0]
        assert not (tmp_path / "new").exists()


def test_a_run_whose_warm_start_source_is_gone_still_shows_and_says_why_it_cannot_resume(tmp_path):
    import shutil

    from nago_spec import Study

    Study.create(Spec.from_dict(params_space(search={"strategy": "random", "budget": 9})), tmp_path / "old").optimize(
        zdt1, backend="local", progress="quiet")
    Study.create(Spec.from_dict(bo_space(warm_start=[str(tmp_path / "old")])), tmp_path / "new").optimize(
        zdt1, backend="local", progress="quiet")
    shutil.rmtree(tmp_path / "old")
    study = Study.open(tmp_path / "new")
    assert "4/4 evaluations" in study.status() and study.report().is_file()
    with pytest.raises(SpecError, match=r"\[search\]\.warm_start = .*old\": not a run directory"):
        study.optimize(zdt1, budget=6, backend="local", progress="quiet")
    assert len(study.trials()) == 4


def test_check_counts_a_warm_start_and_refuses_a_bad_one_in_one_line(tmp_path, capsys):
    from nago_spec.runners.cli import main

    old = tmp_path / "old"
    main(["run", str(REPO / "specs" / "01_params_zdt1.toml"), "--out", str(old), "--budget", "3", "--progress", "quiet"])
    text = (REPO / "specs" / "01_params_zdt1.toml").read_text().replace('"problems.py:', f'"{REPO}/specs/problems.py:')
    good = tmp_path / "good.toml"
    good.write_text(text.replace("batch = 2", f'batch = 2\nwarm_start = ["{old}"]'))
    assert main(["check", str(good)]) == 0
    assert f"warm start: 3 completed trial(s) of {old}" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("x4 = { type", "x5 = { type").replace("batch = 2", f'batch = 2\nwarm_start = ["{old}"]'))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith('/old": its space has x4, this one does not'), err
