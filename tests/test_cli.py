"""The command line: check summaries, one clear line and exit 2 for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nago_spec.runners.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_check_summarises_the_quickstart(capsys):
    assert main(["check", str(REPO / "specs" / "quickstart.toml")]) == 0
    out = capsys.readouterr().out
    assert "quickstart: valid spec" in out and "top.nodes" in out and "sample network" in out


def test_check_json_is_machine_readable(capsys):
    assert main(["check", "--json", str(REPO / "specs" / "quickstart.toml")]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["name"] == "quickstart" and s["data"]["input"] == [1, 8, 8]
    assert {p["name"] for p in s["space"]} >= {"top.nodes", "mid.p", "bottom.k"}
    assert s["sample_network"]["params"] > 0 and s["sample_network"]["param_budget"] == 20000


def test_check_shows_the_width_the_final_training_builds(tiny_spec, capsys):
    tiny_spec.write_text(tiny_spec.read_text().replace("[export]\n", "[export]\nparam_budget = 12000\n"))
    assert main(["check", "--json", str(tiny_spec)]) == 0
    n = json.loads(capsys.readouterr().out)["sample_network"]
    assert n["param_budget"] == 3000 and n["exported"]["param_budget"] == 12000
    assert n["exported"]["params"] > 2 * n["params"]
    assert all(w > c for w, c in zip(n["exported"]["stage_channels"], n["stage_channels"]))
    assert main(["check", str(tiny_spec)]) == 0
    assert f"final training at [export].param_budget 12,000: the same graphs with {n['exported']['params']:,} params" in (
        capsys.readouterr().out)


BAD = {
    "wrong type": ("[train]\nepochs = \"ten\"\n", r"\[train\]\.epochs = \"ten\""),
    "out of range": ("[data]\nval_fraction = 1.5\n", r"\[data\]\.val_fraction = 1\.5"),
    "unknown key": ("[train]\nepoch = 3\n", r"\[train\]\.epoch = 3: unknown key \(did you mean 'epochs'\?\)"),
    "missing data path": ("[data]\ndataset = \"idx\"\npath = \"nowhere\"\n", r"\[data\]\.path"),
    "callable that does not import": (
        "[[objectives]]\nname = \"energy\"\ncallable = \"nope_module_xyz:f\"\n", r"\[objectives\]\[1\]\.callable"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_one_line_and_exit_2(case, tmp_path, capsys):
    body, pattern = BAD[case]
    spec = tmp_path / "bad.toml"
    spec.write_text('version = 1\nname = "bad"\n[[objectives]]\nname = "error"\n' + body)
    assert main(["check", str(spec)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{spec}: ") or lines[0].startswith(str(spec)), lines[0]
    assert __import__("re").search(pattern, lines[0]), lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_corrupt_data_file_gives_one_line_naming_it_and_exit_2(command, tmp_path, capsys):
    data = tmp_path / "data.npz"
    data.write_bytes(b"PK\x03\x04 not really a zip archive")
    spec = tmp_path / "bad.toml"
    spec.write_text('version = 1\nname = "bad"\n[data]\ndataset = "npz"\npath = "data.npz"\n'
                    '[[objectives]]\nname = "error"\n')
    args = [command, str(spec)] + (["--out", str(tmp_path / "run"), "--backend", "local"] if command == "run" else [])
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert f"npz: {data}: not a readable .npz file" in lines[0]
    assert not (tmp_path / "run" / "study.db").exists()  # nothing was started, so nothing to resume


def _installed_nago(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed console script, run outside the checkout so it imports the installed package."""
    script = Path(sys.executable).with_name("nago")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}: nago-spec is not installed in this environment")
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd)


def test_check_accepts_every_example_spec(capsys):
    """In process (a console-script start per spec cost 40 s of the default run; the installed script's
    check is tested on the quickstart below)."""
    for spec in sorted((REPO / "specs").glob("*.toml")):
        code = main(["check", str(spec)])
        err = capsys.readouterr().err
        if code == 2 and "[data].path" in err:
            continue  # a spec reading ../shared/data, absent from a user's clone
        assert code == 0, (spec.name, err)


def test_installed_console_script_checks_the_quickstart(tmp_path):
    proc = _installed_nago("check", str(REPO / "specs" / "quickstart.toml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "quickstart: valid spec" in proc.stdout and "device: " in proc.stdout


def test_installed_console_script_runs_a_search(tmp_path):
    spec = REPO / "specs" / "01_params_zdt1.toml"
    out = tmp_path / "run"
    proc = _installed_nago("run", str(spec), "--out", str(out), "--budget", "3", "--backend", "local",
                           "--progress", "quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.md").exists() and len((out / "trials.csv").read_text().splitlines()) == 4


def test_console_script_reports_errors_without_traceback(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text("version = 1\n[trian]\nepochs = 1\n")
    proc = _installed_nago("check", str(spec), cwd=tmp_path)
    assert proc.returncode == 2
    assert "did you mean 'train'" in proc.stderr and "Traceback" not in proc.stderr


def test_run_on_a_missing_spec_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.toml"), "--out", str(tmp_path / "r")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_readme_spec_is_valid(tmp_path, capsys):
    text = (REPO / "README.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    spec = tmp_path / "readme.toml"
    spec.write_text(block)
    assert main(["check", str(spec)]) == 0, capsys.readouterr().err


def test_readme_opens_with_the_two_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert block[0].startswith("pip install -c constraints.txt ") and "nago run specs/quickstart.toml" in block[0]
    assert block[1].startswith("pip install -c constraints.txt ") and "pytest" in block[1]


def test_check_summarises_the_rnag_example(capsys):
    assert main(["check", "--json", str(REPO / "specs" / "03_rnag_digits.toml")]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["kind"] == "rnag" and {p["name"] for p in s["space"]} == {"stage.nodes", "stage.k", "stage.p"}
    net = s["sample_network"]
    assert net["space"] == "rnag" and net["top_cells"] == 3 and net["mid_nodes"] == net["op_nodes"]


def test_the_distribution_installs_no_top_level_runners_package():
    # runners/ is a folder of the repository but installs as nago_spec.runners, so the
    # distribution does not claim a generic top-level name another package may own
    import tomllib

    setup = tomllib.loads((REPO / "pyproject.toml").read_text())
    tool = setup["tool"]["setuptools"]
    assert all(p == "nago_spec" or p.startswith("nago_spec.") for p in tool["packages"])
    assert tool["package-dir"] == {"nago_spec.runners": "runners"}
    assert setup["project"]["scripts"]["nago"] == "nago_spec.runners.cli:main"
    import nago_spec.runners.cli

    assert Path(nago_spec.runners.cli.__file__).resolve().parent.name == "runners"
