"""Ray as users run it (issue 21, point 4): a real two-node cluster on this machine (a head and a worker
node, two `ray start` processes, each of one CPU, with token authentication as `ray start` sets it up),
joined by `nago run` processes by default and by address, tested as the process backend is:
a raising, a hanging and a killed trial, a stopped run that resumes, and the errors of a cluster
that cannot be joined."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nago_spec.store import Store, TrialState

from test_backends import _chaos_spec
from test_faults import _workers_started
from conftest import params_spec

REPO = Path(__file__).resolve().parents[1]
NAGO = [sys.executable, "-m", "nago_spec.runners.cli"]

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'nago-spec[ray]')")
RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(RAY is None, reason="the `ray` command is not installed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """``(address, env)``: a head and a worker node; ``env`` holds the cluster's token for the drivers."""
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus=1", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common], env=env,
                   check=True, capture_output=True, timeout=120)
    try:
        address = f"127.0.0.1:{port}"
        subprocess.run([RAY, "start", f"--address={address}", *common], env=env, check=True, capture_output=True,
                       timeout=120)
        yield address, env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _nodes(env) -> int:
    probe = "import ray; ray.init(log_to_driver=False); print(len([n for n in ray.nodes() if n['Alive']]))"
    return int(subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                              check=True, timeout=120).stdout.split()[-1])


def test_a_run_joins_the_cluster_running_here_and_records_failures_like_the_process_backend(cluster, tmp_path):
    """Without an address `nago run` joins the running cluster (it raised `num_cpus and num_gpus must
    not be provided`): call 1 raises, call 2 hangs past the 4 s limit, call 3 kills its Ray worker;
    the first two are FAILED with their reasons, the third re-queued once, on two nodes of one CPU."""
    _, env = cluster
    assert _nodes(env) == 2
    out = tmp_path / "run"
    done = subprocess.run([*NAGO, "run", str(_chaos_spec(tmp_path, "ray", 2)), "--out", str(out), "--progress",
                           "quiet"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with Store(out / "study.db") as store:
        trials = store.trials()
    assert len(trials) == 7 and sum(t.state is TrialState.COMPLETE for t in trials) == 5
    raised, timed_out = sorted((t.error for t in trials if t.state is TrialState.FAILED),
                               key=lambda e: e.startswith("exceeded"))
    assert raised.endswith("raised ValueError: the first call raises")
    assert timed_out == "exceeded the trial time limit of 4 s; the call was interrupted"
    assert [t.attempts for t in trials if t.state is TrialState.COMPLETE].count(2) == 1  # the killed one
    assert len((tmp_path / "calls.txt").read_text().split()) == 8


#: Ray's workers on a `ray start` cluster have the nodes' environment, not the driver's: the objective's
#: settings are files beside it.
SLOW_ON_RAY = """
import os, time
from pathlib import Path

HERE = Path(__file__).parent

def slow(params):
    (HERE / "pids" / str(os.getpid())).touch()  # where the trial runs
    time.sleep(float((HERE / "sleep.txt").read_text()))
    return {"f1": params["x1"], "f2": 1 - params["x1"]}
"""


def _slow_spec(tmp_path: Path, address: str, sleep: float) -> tuple[Path, Path]:
    """A spec of 4 SLOW_ON_RAY trials sleeping ``sleep`` s on the cluster at ``address``, and the folder
    of their workers' pids."""
    spec = params_spec(tmp_path / "slow.toml", SLOW_ON_RAY, "slow", f"""
        [search]
        strategy = "random"
        budget = 4
        [run]
        backend = "ray"
        address = "{address}"
    """)
    (tmp_path / "pids").mkdir()
    (tmp_path / "sleep.txt").write_text(str(sleep))
    return spec, tmp_path / "pids"


def test_a_run_on_the_cluster_stopped_midway_resumes_by_address_with_no_trial_twice(cluster, tmp_path):
    address, env = cluster
    spec, pids = _slow_spec(tmp_path, address, 60)
    cmd = [*NAGO, "run", str(spec), "--out", str(tmp_path / "run"), "--progress", "quiet"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        _workers_started(pids, 2)  # one trial on each node
    except AssertionError:
        proc.kill()
        raise AssertionError(proc.communicate()[1]) from None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    with Store(tmp_path / "run" / "study.db") as store:
        assert sorted(t.state.value for t in store.trials()) == ["RUNNING", "RUNNING"]
    (tmp_path / "sleep.txt").write_text("0")
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with Store(tmp_path / "run" / "study.db") as store:
        trials = store.trials()
    assert [(t.id, t.state) for t in trials] == [(i, TrialState.COMPLETE) for i in range(4)]
    assert [t.attempts for t in trials] == [2, 2, 1, 1]  # the two stopped in flight ran again, once


def test_joining_a_cluster_that_cannot_be_joined_is_one_line(cluster, tmp_path):
    """By address without the token setting: Ray retried for 30 s of auth errors and ended in a
    traceback; an address where nothing listens: minutes of silent retries."""
    address, env = cluster
    spec = REPO / "specs" / "01_params_zdt1.toml"
    bare = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    for where, environment, expected in [
        (address, bare, "RAY_AUTH_MODE=token"),
        (f"127.0.0.1:{_free_port()}", env, "no Ray cluster answers there"),
    ]:
        started = time.monotonic()
        done = subprocess.run([*NAGO, "run", str(spec), "--out", str(tmp_path / "run"), "--backend", "ray",
                               "--progress", "quiet", "--budget", "2"], env={**environment, "RAY_ADDRESS": where},
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and expected in last and "Traceback" not in done.stderr, done.stderr
        assert time.monotonic() - started < 90


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to tell a live process from a zombie")
def test_the_cluster_s_workers_die_with_a_driver_killed_with_sigkill(cluster, tmp_path):
    """Ray ends a job's workers when its driver dies: no trial trains on as an orphan on the cluster."""
    from test_faults import _outlived_by

    address, env = cluster
    spec, pids = _slow_spec(tmp_path, address, 120)
    proc = subprocess.Popen([*NAGO, "run", str(spec), "--out", str(tmp_path / "run"), "--progress", "quiet"],
                            env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    assert _outlived_by(proc, _workers_started(pids, 2)) < 10, "a Ray worker outlived its driver by 10 s"
