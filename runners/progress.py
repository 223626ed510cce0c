"""Progress of a run on the terminal: a live rich display, plain lines, JSON lines, or nothing."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from nago_spec.problem import ObjectiveInfo
from nago_spec.store import Outcome

MODES = ("auto", "rich", "plain", "quiet", "json")


def silence_closed_stream(stream: Any) -> None:
    """Point a stream whose reader went away (``| head``) at /dev/null, so that nothing written later,
    nor the interpreter's flush at exit, raises BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a file descriptor (a test's capture): nothing to redirect
        pass


def _survives_closed_streams(method: Callable[..., Any]) -> Callable[..., Any]:
    """A progress method that falls silent, rather than raising, once its stream is closed: a closed
    stdout or stderr must never abort a search."""

    @functools.wraps(method)
    def wrapper(self: Progress, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BrokenPipeError:
            stream = sys.stdout if self.mode == "json" else sys.stderr
            self.mode, self._bar = "quiet", None
            silence_closed_stream(stream)
            return None

    return wrapper


class Progress:
    """Reports trials done/running/failed, the best values, the hypervolume and an ETA.

    ``rich``: a live bar on stderr; ``plain``: one line per finished trial on stderr (logs, CI);
    ``json``: one JSON object per event on stdout (scripts); ``quiet``: nothing. ``auto`` picks rich
    on a terminal and plain otherwise.
    """

    def __init__(self, mode: str, *, total: int, objectives: Sequence[ObjectiveInfo]):
        if mode == "auto":
            mode = "rich" if sys.stderr.isatty() else "plain"
        self.mode = mode
        self.total = total
        self.objectives = objectives
        self._t0 = time.perf_counter()
        self._done0 = 0
        self._bar = None
        self._task = None

    @_survives_closed_streams
    def start(self, done: int, summary: dict[str, Any]) -> None:
        self._done0 = done
        if self.mode == "rich":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("[bold]trials"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.description}"),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._describe(summary, 0), total=self.total, completed=done)
        elif self.mode == "json":
            self._emit({"event": "start", "done": done, "total": self.total})

    @_survives_closed_streams
    def running(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=self._describe(None, n))

    @_survives_closed_streams
    def finished(self, trial: int, out: Outcome, running: int, summary: dict[str, Any]) -> None:
        done = summary["counts"]["COMPLETE"] + summary["counts"]["FAILED"]
        if self.mode == "rich":
            self._bar.update(self._task, completed=done, description=self._describe(summary, running))
            if not out.ok:
                self._bar.console.print(f"[red]trial {trial} failed:[/red] {out.error.splitlines()[0]}")
        elif self.mode == "plain":
            what = (
                ", ".join(f"{k}={v:.4g}" for k, v in out.values.items())
                if out.ok
                else "FAILED: " + out.error.splitlines()[0]
            )
            print(f"[{done}/{self.total}] trial {trial}: {what} | {self._describe(summary, running)}{self._eta(done)}",
                  file=sys.stderr, flush=True)
        elif self.mode == "json":
            self._emit({"event": "trial", "trial": trial, "state": "COMPLETE" if out.ok else "FAILED",
                        "values": out.values, "error": out.error, **summary})

    @_survives_closed_streams
    def message(self, text: str) -> None:
        if self.mode == "json":
            self._emit({"event": "message", "text": text})
        elif self.mode != "quiet":
            (self._bar.console.print if self._bar is not None else lambda t: print(t, file=sys.stderr))(text)

    @_survives_closed_streams
    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _describe(self, summary: dict[str, Any] | None, running: int) -> str:
        if summary is not None:
            self._last = summary
        summary = getattr(self, "_last", None)
        parts = [f"running {running}"]
        if summary:
            failed = summary["counts"]["FAILED"]
            if failed:
                parts.append(f"failed {failed}")
            parts += [f"best {k} {v:.4g}" for k, v in summary["best"].items()]
            parts.append(f"hv {summary['hypervolume']:.3f}")
        text = ", ".join(parts)
        if self._bar is not None:  # the statistics give way on a narrow terminal, the counters never do
            room = max(12, self._bar.console.width - 58)
            text = text if len(text) <= room else text[: room - 1] + "…"
        return text

    def _eta(self, done: int) -> str:
        new = done - self._done0
        if new <= 0 or done >= self.total:
            return ""
        per = (time.perf_counter() - self._t0) / new
        return f", eta {per * (self.total - done):.0f} s"

    @staticmethod
    def _emit(obj: dict[str, Any]) -> None:
        print(json.dumps(obj, default=str), flush=True)
