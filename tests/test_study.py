"""The Python API (issue 20, point 1): Study over a spec built from a dict or TOML text, the README's
example run as written, and the same one-line errors as a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nago_spec.errors import SpecError, StoreError
from nago_spec.spec import Spec, load_spec
from nago_spec.store import TrialState

REPO = Path(__file__).resolve().parents[1]


def readme_python_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


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
    assert from_text.search_hash() == from_file.search_hash() == from_dict.search_hash()
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
