"""Runs that survive their environment (issue 21): each fault as a user meets it, with the real
operating system, processes and store. This file starts with the run directory's one owner."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nago_spec.runners.cli import main
from nago_spec.runners.lock import LOCK_FILE, owner
from nago_spec.store import Store, TrialState

from conftest import params_spec

REPO = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nago_spec.runners.lock import owning
    with owning(Path(sys.argv[1]), "run"):
        print("holding", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def params_run(tmp_path):
    """A finished plain-parameter run (the ZDT1 example, 4 trials) and its spec."""
    spec = REPO / "specs" / "01_params_zdt1.toml"
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out), "--budget", "4", "--progress", "quiet"]) == 0
    return spec, out


def _hold(run_dir: Path) -> subprocess.Popen:
    """Another process that owns ``run_dir`` (as a live `nago run` would), until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_run_on_a_live_directory_is_refused_naming_its_owner(params_run, capsys):
    spec, out = params_run
    before = (out / "study.db").read_bytes(), (out / "spec.toml").read_text()
    holder = _hold(out)
    try:
        capsys.readouterr()
        for command in (["run", str(spec), "--out", str(out), "--budget", "6", "--progress", "quiet"],
                        ["run", str(spec), "--out", str(out), "--force-new", "--progress", "quiet"]):
            assert main(command) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1, err
            assert f"in use by the run of pid {holder.pid} on host {socket.gethostname()}" in err[0]
        # nothing was touched, not even by --force-new
        assert ((out / "study.db").read_bytes(), (out / "spec.toml").read_text()) == before
        assert main(["status", str(out)]) == 0
        assert f"live: the run of pid {holder.pid} on host {socket.gethostname()}" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its process (kill -9): no stale marker stops the next run
    assert owner(out) is None and (out / LOCK_FILE).exists()
    assert main(["status", str(out)]) == 0
    assert "not running" in capsys.readouterr().out
    assert main(["run", str(spec), "--out", str(out), "--budget", "6", "--progress", "quiet"]) == 0
    with Store(out / "study.db") as store:
        assert [t.state for t in store.trials()] == [TrialState.COMPLETE] * 6


def test_an_export_on_a_live_directory_is_refused(tiny_search, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny_search), "--out", str(out), "--budget", "2", "--progress", "quiet"]) == 0
    holder = _hold(out)
    try:
        capsys.readouterr()
        assert main(["export", str(out), "--progress", "quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0] and not (out / "models").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_a_run_holds_its_directory_while_it_lives_and_lets_go_after(params_run):
    spec, out = params_run
    assert owner(out) is None  # the finished run let go
    from nago_spec import Study

    seen = {}

    def f(params):  # runs inside the live run: the directory is owned, by this process
        seen.setdefault("owner", owner(out))
        return {"f1": params["x1"], "f2": 1 - params["x1"]}

    study = Study.create({"version": 1, "name": "own", "space": {"kind": "params", "params": {
        "x1": {"type": "float", "low": 0.0, "high": 1.0}}}, "objectives": [{"name": "f1"}, {"name": "f2"}],
        "search": {"strategy": "random", "budget": 2}}, out.parent / "own")
    out = study.directory
    study.optimize(f, backend="local", progress="quiet")
    assert seen["owner"]["pid"] == os.getpid() and seen["owner"]["what"] == "run"
    assert owner(out) is None


SLOW = """
import os, time
from pathlib import Path

def slow(params):
    Path(os.environ["NAGO_TEST_PIDS"], str(os.getpid())).touch()  # where the trial runs
    time.sleep(float(os.environ.get("NAGO_TEST_SLEEP", "30")))
    return {"f1": params["x1"], "f2": 1 - params["x1"]}
"""


def _slow_run(tmp_path, sleep: float) -> tuple[list[str], dict[str, str], Path]:
    """A `nago run` command of two process workers whose trials sleep ``sleep`` s, its environment,
    and the folder where each trial leaves its worker's pid."""
    spec = params_spec(tmp_path / "slow.toml", SLOW, "slow", """
        [search]
        strategy = "random"
        budget = 4
        [run]
        backend = "process"
        workers = 2
    """)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "NAGO_TEST_PIDS": str(pids), "NAGO_TEST_SLEEP": str(sleep)}
    cmd = [sys.executable, "-m", "nago_spec.runners.cli", "run", str(spec), "--out", str(tmp_path / "run"),
           "--progress", "quiet"]
    return cmd, env, pids


def _workers_started(pids: Path, n: int, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [int(p.name) for p in pids.iterdir()]
        if len(found) >= n:
            return found
        time.sleep(0.1)
    raise AssertionError(f"only {len(list(pids.iterdir()))} of {n} trials started")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower() \
        if Path("/proc").is_dir() else True


def test_sigterm_stops_a_run_like_ctrl_c_and_it_resumes(tmp_path):
    cmd, env, pids = _slow_run(tmp_path, 30)
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    workers = _workers_started(pids, 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == ("terminated (SIGTERM): trials in flight are left to resume; "
                                            "re-run the same command to resume")
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers)  # the workers were stopped with it
    with Store(tmp_path / "run" / "study.db") as store:
        assert {t.state for t in store.trials()} <= {TrialState.RUNNING, TrialState.PENDING}
    env["NAGO_TEST_SLEEP"] = "0"
    assert subprocess.run(cmd, env=env, cwd=REPO).returncode == 0  # and it resumes to the end
    with Store(tmp_path / "run" / "study.db") as store:
        assert [t.state for t in store.trials()] == [TrialState.COMPLETE] * 4


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to tell a live process from a zombie")
def test_workers_die_with_a_parent_killed_with_sigkill(tmp_path):
    cmd, env, pids = _slow_run(tmp_path, 60)
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    workers = _workers_started(pids, 2)
    assert _outlived_by(proc, workers) < 5, "an orphaned worker outlived its parent by 5 s"


def _outlived_by(proc: subprocess.Popen, workers: list[int], limit: float = 10) -> float:
    """Kill ``proc`` with SIGKILL; seconds until none of ``workers`` lives (``limit`` when one still does)."""
    proc.kill()
    proc.wait()
    killed = time.monotonic()
    while any(_alive(p) for p in workers) and time.monotonic() - killed < limit:
        time.sleep(0.1)
    return limit if any(_alive(p) for p in workers) else time.monotonic() - killed


@pytest.mark.slow  # real runs behind real pipes or a full disk: in the README's second test step
def test_a_closed_stdout_or_stderr_never_aborts_a_search_nor_prints_a_traceback(tmp_path):
    """`nago run ... 2>&1 | head -2` aborted the search with a BrokenPipe traceback; `nago status | head
    -1` and `nago check --json | head -1` ended in one. The pipes are real (bash), as a user's are."""
    nago = f"{sys.executable} -m nago_spec.runners.cli"
    spec, out = REPO / "specs" / "01_params_zdt1.toml", tmp_path / "run"
    for command, lines in [
        (f"{nago} run {spec} --out {out} --budget 10 --progress plain 2>&1 | head -2", 2),
        (f"{nago} run {spec} --out {out} --budget 12 --progress json | head -1", 1),
        (f"{nago} status {out} | head -1", 1),
        (f"{nago} check --json {spec} | head -1", 1),
    ]:
        done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0 and done.stderr == "", (command, done.stderr)
        assert len(done.stdout.splitlines()) == lines
    with Store(out / "study.db") as store:  # both searches ran to their end behind the closed pipes
        assert [t.state for t in store.trials()] == [TrialState.COMPLETE] * 12


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_store_is_one_line_for_every_command_and_force_new_starts_over(params_run, damage, capsys):
    spec, out = params_run
    db = out / "study.db"
    for side in ("study.db-wal", "study.db-shm"):
        (out / side).unlink(missing_ok=True)
    data = db.read_bytes()
    db.write_bytes({"garbage": b"this is not a database, it is a note to self\n" * 100,
                    "truncated": data[:100] + b"\0" * (len(data) - 100),
                    "empty": b""}[damage])
    capsys.readouterr()
    for command in (["status", str(out)], ["report", str(out)],
                    ["run", str(spec), "--out", str(out), "--budget", "6", "--progress", "quiet"]):
        assert main(command) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {db}: "), err
        assert ("empty (0 bytes)" if damage == "empty" else "not a readable nago-spec store") in err[0]
        assert "--force-new" in err[0]
    assert main(["run", str(spec), "--out", str(out), "--budget", "3", "--force-new", "--progress", "quiet"]) == 0
    with Store(db) as store:
        assert len(store.trials()) == 3


def test_export_of_a_finished_export_says_so_and_starts_no_workers(tiny_spec, tmp_path, monkeypatch, capsys):
    """`nago export DIR` on a finished export spent 22 to 25 s starting a pool of workers, then printed a
    path without saying the models were already there."""
    from nago_spec.runners import run as run_mod

    out = tmp_path / "run"
    assert main(["run", str(tiny_spec), "--out", str(out), "--budget", "2", "--progress", "quiet"]) == 0
    stamps = {f.name: f.stat().st_mtime_ns for f in (out / "models").glob("*.onnx")}
    assert stamps
    monkeypatch.setattr(run_mod, "backend_of", lambda *a, **k: pytest.fail("no worker should start"))
    capsys.readouterr()
    assert main(["export", str(out), "--progress", "plain"]) == 0
    captured = capsys.readouterr()
    n = len(stamps)
    assert f"{n} of {n} model(s) already exported; nothing to train" in captured.err
    assert captured.out.strip() == str(out / "models" / "manifest.json")
    assert {f.name: f.stat().st_mtime_ns for f in (out / "models").glob("*.onnx")} == stamps


SCRIPT = """
from nago_spec import Study
from nago_spec.spec import Spec

def f(p):
    return {{"f1": p["x"], "f2": 1 - p["x"]}}

spec = Spec.from_dict({{"version": 1, "name": "script", "seed": 0,
    "space": {{"kind": "params", "params": {{"x": {{"type": "float", "low": 0.0, "high": 1.0}}}}}},
    "objectives": [{{"name": "f1"}}, {{"name": "f2"}}],
    "search": {{"strategy": "random", "budget": 4}}, "run": {{"backend": "process", "workers": 2}}}})
{guard}
    Study.create(spec, "run").optimize(f, progress="quiet")
"""


def test_a_worker_that_dies_starting_fails_the_run_with_its_reason_and_it_resumes(tmp_path):
    """A script that starts a study without the main guard: each spawned worker imports it again and
    dies starting. The pool respawned them forever (the run never ended, with no message); now it gives
    up after a few tries, says why, and the guarded script resumes the trials left in flight."""
    script = tmp_path / "study_script.py"
    script.write_text(SCRIPT.format(guard="if True:"))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("nago_spec.runners.backends.WorkerStartFailed: the process backend's workers could not "
                           "start (3 tries): worker process "), last
    assert ('Each worker imports study_script.py again: code that starts a study must run under '
            'if __name__ == "__main__":') in last
    assert "could not start (worker process" in done.stderr and "starting it again" in done.stderr  # retried
    with Store(tmp_path / "run" / "study.db") as store:
        assert {t.state for t in store.trials()} <= {TrialState.RUNNING, TrialState.PENDING}
    script.write_text(SCRIPT.format(guard='if __name__ == "__main__":'))
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, timeout=120)
    with Store(tmp_path / "run" / "study.db") as store:
        assert [(t.id, t.state) for t in store.trials()] == [(i, TrialState.COMPLETE) for i in range(4)]


def _namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


needs_namespaces = pytest.mark.skipif(not _namespaces(), reason="needs `unshare -rm` (user and mount namespaces) "
                                      "to mount a read-only or a full file system without privileges")
NAGO = [sys.executable, "-m", "nago_spec.runners.cli"]


def _mounted(mount: str, *argv: str) -> subprocess.CompletedProcess:
    """``argv`` run in a mount namespace of its own after the shell commands ``mount`` (a real read-only
    or full file system, seen by nothing else)."""
    quoted = " ".join(f"'{a}'" for a in argv)
    return subprocess.run(["unshare", "-rm", "bash", "-c", f"{mount} || exit 99; {quoted}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@needs_namespaces
def test_a_read_only_run_directory_is_read_and_writing_it_is_one_line(params_run, tmp_path):
    """On a read-only file system `nago status` of a finished run failed (SQLite's WAL mode writes side
    files even to read) and `nago run --out` ended in an OSError traceback."""
    spec, out = params_run
    read_only = f"mount --bind '{out}' '{out}' && mount -o remount,bind,ro '{out}'"

    status = _mounted(read_only, *NAGO, "status", str(out))
    assert status.returncode == 0 and status.stderr == "", status.stderr
    assert status.stdout.startswith("params-zdt1: 4/4 evaluations (4 complete, 0 failed")
    assert "not running" in status.stdout

    warm = tmp_path / "warm.toml"  # a warm start reads its source run the same way
    warm.write_text((REPO / "specs" / "01_params_zdt1.toml").read_text().replace(
        'callable = "problems.py', f'callable = "{REPO / "specs" / "problems.py"}').replace(
        "[search]", f'[search]\nwarm_start = ["{out}"]'))
    check = _mounted(read_only, *NAGO, "check", "--json", str(warm))
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["search"]["warm_start"]["trials"] == 4

    for argv, written in [(("report", str(out)), out / "trials.csv"),
                          (("run", str(spec), "--out", str(out), "--budget", "6", "--progress", "quiet"), out),
                          (("run", str(spec), "--out", str(out / "new"), "--budget", "6"), out / "new")]:
        done = _mounted(read_only, *NAGO, *argv)
        assert done.returncode == 1, (argv, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {written}"), (argv, lines)
        assert "read-only file system" in lines[0]
        if argv[0] == "report":
            assert "nago report --out" in lines[0]
    # an archive is reported elsewhere: the run directory is only read
    report = _mounted(read_only, *NAGO, "report", str(out), "--out", str(tmp_path / "report"))
    assert report.returncode == 0 and report.stdout.strip() == str(tmp_path / "report" / "report.md"), report.stderr
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "hv.png", "pareto.csv", "pareto.png", "report.md", "trials.csv"]
    assert (tmp_path / "report" / "trials.csv").read_text() == (out / "trials.csv").read_text()
    with Store(out / "study.db") as store:
        assert [t.state for t in store.trials()] == [TrialState.COMPLETE] * 4


@needs_namespaces
@pytest.mark.slow  # real runs behind real pipes or a full disk: in the README's second test step
def test_a_full_disk_stops_a_run_in_one_line_and_it_resumes_once_there_is_room(tmp_path):
    """A run whose directory fills up ends with one line saying so; what the store holds is kept, and
    once space is freed the same command resumes to a whole run, no trial twice."""
    spec, disk = REPO / "specs" / "01_params_zdt1.toml", tmp_path / "disk"
    disk.mkdir()
    out = disk / "run"
    states = tmp_path / "states.py"
    states.write_text("import sys\nfrom nago_spec.store import Store\n"
                      "print([(t.id, t.state.value) for t in Store(sys.argv[1]).trials()])\n")
    nago = " ".join(NAGO)
    # the run must live on the small file system for both commands: one namespace, two runs
    script = (f"mount -t tmpfs -o size=1m tmpfs '{disk}' || exit 99; head -c 900k /dev/zero > '{disk}/filler'; "
              f"{nago} run '{spec}' --out '{out}' --budget 40 --progress quiet; echo first=$? >&2; "
              f"rm '{disk}/filler' && {nago} run '{spec}' --out '{out}' --budget 40 --progress quiet && "
              f"{sys.executable} '{states}' '{out}/study.db'")
    done = subprocess.run(["unshare", "-rm", "bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    first, resumed = done.stderr.split("first=")
    lines = first.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}/study.db: "), lines
    assert "free some space and run the same command again" in lines[0]
    assert resumed.strip() == "1", resumed
    assert done.stdout.strip() == str([(i, "COMPLETE") for i in range(40)])


DIES = """
import os, signal, time
from pathlib import Path

def dies(params):
    calls = Path(os.environ["NAGO_TEST_CALLS"])
    n = len(calls.read_text()) + 1 if calls.exists() else 1
    calls.write_text("x" * n)
    if n in (1, 3):  # the first call of each session kills its worker
        os.kill(os.getpid(), signal.SIGKILL)
    if n == 2:  # the retry hangs until the run is stopped
        time.sleep(120)
    return {"f1": params["x1"], "f2": 1 - params["x1"]}
"""


def _stderr_or_stacks(proc: subprocess.Popen, timeout: float) -> str:
    """The stderr of ``proc`` once it exits; past ``timeout``, a failure showing what it is stuck on: the
    processes left (``ps``) and every thread's stack (the command runs with PYTHONFAULTHANDLER=1, so
    SIGABRT makes it print them), and the signal masks of it and of this process (pending, blocked,
    ignored, caught). This test hung in full-suite runs, the `nago run` main thread never acting on the
    SIGINT: the masks showed SIGINT ignored in pytest and so in its child, a suite started as a
    background job of a non-interactive shell (conftest now gives the tests a terminal's SIGINT)."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        masks = []
        for pid, who in ((proc.pid, "nago run"), (os.getpid(), "pytest")):
            with open(f"/proc/{pid}/status") as f:
                masks += [f"{who}: {line.strip()}" for line in f if line.startswith(("ShdPnd", "SigPnd", "SigBlk",
                                                                                      "SigIgn", "SigCgt"))]
        tree = subprocess.run(["ps", "-eo", "pid,ppid,stat,etimes,wchan:20,args"], capture_output=True,
                              text=True).stdout
        family = [line for line in tree.splitlines()[1:] if line.split()[1] == str(proc.pid)]
        for child in family:  # a worker still alive holds the stderr pipe open
            os.kill(int(child.split()[0]), signal.SIGABRT)
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"nago run did not exit {timeout:g} s after SIGINT; signal masks in hex (SIGINT is 0x2):\n"
                    + "\n".join(masks) + "\nits children:\n" + "\n".join(family)
                    + f"\nits stderr, with its threads' stacks:\n{err}")


def test_the_retry_counter_of_a_trial_whose_worker_died_survives_resume(tmp_path):
    """The workers a trial killed were counted in memory: each resumed session allowed it max_retries
    more deaths. They are counted in the store now, so the third death over two sessions fails it."""
    spec = params_spec(tmp_path / "dies.toml", DIES, "dies", """
        [search]
        strategy = "random"
        budget = 1
        [run]
        backend = "process"
        workers = 1
        max_retries = 1
    """)
    calls = tmp_path / "calls"
    env = {**os.environ, "NAGO_TEST_CALLS": str(calls), "PYTHONFAULTHANDLER": "1"}
    cmd = [*NAGO, "run", str(spec), "--out", str(tmp_path / "run"), "--progress", "plain"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (calls.exists() and len(calls.read_text()) == 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # stopped while the retry runs: trial 0 is left to resume
    err = _stderr_or_stacks(proc, timeout=60)
    assert proc.returncode == 130 and "re-queued (1 of 1 retries)" in err
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with Store(tmp_path / "run" / "study.db") as store:
        (t,) = store.trials()
        assert t.state is TrialState.FAILED and t.error.endswith("(2 time(s); max_retries = 1)"), t.error
        assert store.lost_workers("trial 0") == 2
    assert len(calls.read_text()) == 3


def test_a_bo_fallback_to_random_points_is_stored_shown_and_reported(tmp_path, monkeypatch, capsys):
    """bo's proposal raising (a GP fit that fails: here the fault is injected into the fit) was replaced
    by random points with a warning on stderr only; now each such trial says so in the store,
    trials.csv, the progress, report.md and nago status."""
    from linear_operator.utils.errors import NotPSDError

    import nago_spec.strategies.bo as bo
    from nago_spec import Study

    fit, calls = bo.fit_gps, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise NotPSDError("matrix not positive definite")
        return fit(*args, **kwargs)

    monkeypatch.setattr(bo, "fit_gps", fails_once)
    study = Study.create({"version": 1, "name": "fallback", "seed": 0, "space": {"kind": "params", "params": {
        "x1": {"type": "float", "low": 0.0, "high": 1.0}, "x2": {"type": "float", "low": 0.0, "high": 1.0}}},
        "objectives": [{"name": "f1"}, {"name": "f2"}],
        "search": {"strategy": "bo", "budget": 8, "initial": 4, "batch": 2,
                   "options": {"pop_size": 16, "generations": 4}}}, tmp_path / "run")
    study.optimize(lambda p: {"f1": p["x1"], "f2": (1 - p["x1"]) * (1 + p["x2"])}, backend="local",
                   progress="plain")
    why = "the BO proposal failed (NotPSDError: matrix not positive definite); a random point instead"
    assert [t.fallback for t in study.trials()] == [None] * 4 + [why] * 2 + [None] * 2
    assert f"trials 4, 5: {why}" in capsys.readouterr().err
    report = (study.directory / "report.md").read_text()
    assert f"- fallback proposals: 2 of 8 trials are not bo's own proposal\n  - trials 4, 5: {why}\n" in report
    assert f"trials 4, 5: {why}" in study.status()
    with (study.directory / "trials.csv").open() as f:
        assert [r["fallback"] for r in csv.DictReader(f)] == [""] * 4 + [why] * 2 + [""] * 2


def test_a_ray_address_where_nothing_answers_is_one_line_at_once(tmp_path, monkeypatch, capsys):
    """Ray retried an unreachable cluster for minutes without a word; the two-node cluster's own
    faults are in test_ray_cluster.py (slow)."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'nago-spec[ray]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free: nothing listens there once the socket is closed
    spec = REPO / "specs" / "01_params_zdt1.toml"
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    started = time.monotonic()
    assert main(["run", str(spec), "--out", str(tmp_path / "run"), "--backend", "ray", "--budget", "2",
                 "--progress", "quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: RAY_ADDRESS = '127.0.0.1:{port}': no Ray cluster answers there (Connection refused); "
                   "start it (`ray start --head`) or give the address `ray start` printed"]
    assert time.monotonic() - started < 30


def test_a_failing_command_with_a_closed_stderr_keeps_its_exit_code(tmp_path):
    """`nago check missing.toml 2>&1 | head -0` exited 0: the error line met the closed pipe and the
    BrokenPipeError was taken for a reader that had what it wanted."""
    nago = " ".join(NAGO)
    for command, code in [(f"{nago} check {tmp_path / 'missing.toml'} 2>&1 | head -0", 2),
                          (f"{nago} status {tmp_path} 2>&1 | head -0", 1)]:
        done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert (done.returncode, done.stdout, done.stderr) == (code, "", ""), command


def test_a_second_sigterm_cannot_cut_the_clean_up_of_the_first_short(tmp_path, capsys):
    """A supervisor's repeated SIGTERMs, or a user's `kill` twice, raised Terminated again inside the
    clean-up the first one started (stopping workers, closing the store); now the later ones are
    ignored until the command returns. The objective runs in-process and signals itself twice."""
    spec = params_spec(tmp_path / "term.toml", """
        import os, signal
        from pathlib import Path

        def stopped(params):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:  # the first SIGTERM's clean-up has begun
                Path(__file__).with_name("seen.txt").write_text(str(signal.getsignal(signal.SIGTERM)))
                os.kill(os.getpid(), signal.SIGTERM)
            return {"f1": 0.0, "f2": 0.0}
    """, "stopped", """
        [search]
        strategy = "random"
        budget = 2
        [run]
        backend = "local"
    """)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["run", str(spec), "--out", str(tmp_path / "run"), "--progress", "quiet"]) == 143
    assert (tmp_path / "seen.txt").read_text() == str(signal.SIG_IGN)
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("terminated (SIGTERM)")
    assert signal.getsignal(signal.SIGTERM) == before  # given back when the command returns


def test_the_ray_backend_without_ray_installed_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    spec = REPO / "specs" / "01_params_zdt1.toml"
    assert main(["run", str(spec), "--out", str(tmp_path / "run"), "--backend", "ray", "--progress", "quiet"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: the ray backend needs Ray: pip install -c constraints.txt 'nago-spec[ray]'"]
