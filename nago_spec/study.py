"""A search and its run directory as one Python object: what ``nago run``, ``status``, ``report`` and
``export`` do, for a notebook or a script.

    from nago_spec import Study
    from nago_spec.spec import Spec

    study = Study.create(Spec.from_dict({...}), "runs/mine")   # or a spec file's path, or load_spec(text=...)
    study.optimize()             # runs (or resumes) the search, then the final training and export
    study.front()                # the run's front: the trials report.md and pareto.csv list
    study.export()               # the final training and ONNX export again, continuing where it stopped

``Study.open("runs/mine")`` reopens a run directory; ``optimize`` on it resumes the search, exactly
as ``nago run`` on the same spec would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nago_spec.errors import SpecError, StoreError
from nago_spec.spec import Spec, load_spec
from nago_spec.store import Store, TrialRecord


class Study:
    """One run: its spec and its directory (study.db, spec.toml, the reports and models/)."""

    def __init__(self, spec: Spec, directory: Path):
        self.spec = spec
        self.directory = directory

    def __repr__(self) -> str:
        return f"Study({self.spec.name!r}, {str(self.directory)!r})"

    @classmethod
    def create(cls, spec: Spec | Mapping[str, Any] | str | os.PathLike[str], directory: str | os.PathLike[str] | None = None,
               *, force_new: bool = False) -> Study:
        """A study of ``spec`` (a Spec, a mapping laid out like the TOML file, or a spec file's path) in
        ``directory`` (default ``runs/<name>``).

        A directory that already holds a run of the same search is taken over, to be resumed; one
        holding another search is refused (StoreError naming what changed) unless ``force_new``,
        which discards it.
        """
        from nago_spec.runners.run import placement_of, prepare_run_dir
        from nago_spec.warm import warm_trials

        if isinstance(spec, Mapping):
            spec = Spec.from_dict(spec)
        elif not isinstance(spec, Spec):
            spec = load_spec(spec)
        run_dir = Path(directory if directory is not None else Path("runs") / spec.name).resolve()
        # what the run would refuse is refused before its directory exists: a device this machine
        # lacks, an incompatible warm-start run
        placement_of(spec)
        warm_trials(spec)
        prepare_run_dir(spec, run_dir, force_new)
        return cls(spec, run_dir)

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Study:
        """The study in an existing run directory (its spec.toml, as the run resolved it)."""
        run_dir = Path(directory).resolve()
        if not (run_dir / "spec.toml").is_file():
            raise StoreError(f"{directory}: not a run directory (no study.db / spec.toml)")
        return cls(load_spec(run_dir / "spec.toml"), run_dir)

    def optimize(self, fn: Callable[..., Any] | None = None, budget: int | None = None, *, backend: str | None = None,
                 workers: int | None = None, device: str | None = None, progress: str = "auto") -> Study:
        """Run the search to ``budget`` evaluations (default: the spec's; a larger one extends a
        finished run), then, in network mode, the final training and export, as ``nago run`` does.

        ``fn``: the objective function of a plain-parameter spec, for the objectives that name no
        callable: ``fn(params)`` returns a number, or a mapping of objective names to numbers. With
        ``backend="local"`` it runs in this process; the process pool's workers import it by module
        and name (a function of a module, or of a script run with the main guard), Ray's take any
        function cloudpickle can send. It is not stored: give it again to resume.

        ``backend``, ``workers`` and ``device`` override the spec's [run] for this call;
        ``progress``: auto, rich, plain, quiet or json. Resumes whatever an earlier call or a killed
        run left. Returns the study."""
        from nago_spec.runners.run import RunOptions, run

        if isinstance(fn, int) and not isinstance(fn, bool):
            raise TypeError("optimize: the first argument is the objective function; give the budget as budget=N")
        spec = self.spec if fn is None else self.spec.with_function(fn)
        if fn is not None and (backend or spec.run.backend) == "process":
            _importable(fn)
        run(spec, RunOptions(out=self.directory, budget=budget, backend=backend, workers=workers, device=device,
                             mode=progress))
        self.spec = load_spec(self.directory / "spec.toml").with_functions_of(self.spec)  # the budget it ran to
        return self

    def add_trials(self, other: Study | str | os.PathLike[str]) -> int:
        """Warm-start this study with the completed trials of ``other`` (a Study or a run directory)
        over the same space and objectives: they are told to the strategy before it next asks, in
        this and every later ``optimize``, as ``[search] warm_start`` does. Returns how many trials
        ``other`` gives. Raises SpecError, naming the parameter or objective that differs, for an
        incompatible run; a run already added is not added twice."""
        from nago_spec.runners.run import prepare_run_dir
        from nago_spec.warm import warm_trials

        source = (other.directory if isinstance(other, Study) else Path(other)).resolve()
        sources = list(self.spec.search.warm_start)
        if source not in sources:
            sources.append(source)
        spec = self.spec.with_overrides({"search": {"warm_start": [str(p) for p in sources]}})
        given = sum(w.source == source for w in warm_trials(spec))
        prepare_run_dir(spec, self.directory, force_new=False)
        self.spec = spec
        return given

    def trials(self) -> list[TrialRecord]:
        """Every trial, in the order they were proposed (none before the first optimize)."""
        if not (self.directory / "study.db").exists():
            return []
        with Store(self.directory / "study.db", readonly=True) as store:
            return store.trials()

    def front(self) -> list[TrialRecord]:
        """The non-dominated feasible trials (the least violating ones when none is feasible), at the
        highest budget completed in a multi-fidelity run: the front of report.md and pareto.csv."""
        from nago_spec.pipeline import Evaluator
        from nago_spec.report import run_front

        problem = Evaluator(self.spec, self.directory).problem(None)
        return run_front(self.trials(), problem.objectives, problem.constraints).pareto

    def status(self) -> str:
        """Where the run stands, as ``nago status`` prints it: counts, the front with its trials, the
        hypervolume, where trials ran."""
        from nago_spec.runners.run import status_text

        return status_text(self.directory)

    def export(self, force: bool = False, progress: str = "quiet") -> dict[str, Any]:
        """The final training and ONNX export of the chosen front points (``nago export``): continues an
        interrupted one, ``force`` retrains every model. Returns manifest.json's content."""
        import json

        from nago_spec.runners.run import export_run

        return json.loads(export_run(self.directory, progress, force).read_text())

    def report(self, compare: Sequence[Study | str | os.PathLike[str]] = (),
               out: str | os.PathLike[str] | None = None) -> Path:
        """Rewrite report.md, trials.csv, pareto.csv and the plots (``nago report``); ``compare``: other
        studies or run directories of the same objectives, drawn on hv.png; ``out``: a folder to write
        them to instead of the run directory (one that cannot be written). Returns report.md's path."""
        from nago_spec.runners.run import report_run

        others = [c.directory if isinstance(c, Study) else Path(c) for c in compare]
        return report_run(self.directory, others, None if out is None else Path(out))


def _importable(fn: Callable[..., Any]) -> None:
    """Refuse, before any trial, a function the process pool's workers cannot import: they are
    spawned, and find the function by its module and name."""
    import sys

    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    main = sys.modules.get("__main__")
    if "<" in name or module is None or (module == "__main__" and not getattr(main, "__file__", None)):
        raise SpecError(
            f"Study.optimize: {module}:{name} cannot reach the process pool's workers, which import the objective "
            "by module and name (a lambda, a nested function or a notebook's cannot be): define it in a module, "
            'or run it in this process with backend="local" (Ray sends any function cloudpickle takes)'
        )
