"""Rich progress bars that show tokens/s while a stage generates."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .runlog import TERMINAL


class Reporter:
    """One live progress display per run; each generation phase gets its own bar."""

    def __init__(self, console: Console | None = None):
        # TERMINAL: the command's own stderr, also while descriptors 1 and 2 go to the run's log (rlaif.runlog)
        self.console = console or Console(file=TERMINAL)
        self.progress = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[tokens]:>7} tok  {task.fields[rate]:>7.1f} tok/s"),
            TimeElapsedColumn(),
            console=self.console,
            redirect_stdout=False,  # a library's print belongs in the log, not above the bars
            redirect_stderr=False,
        )
        # each bar's requests, tokens and seconds (run.json `phases`): the time since the previous advance of any bar
        # (or since the newest bar appeared) goes to the bar advanced, so bars that take turns (critique, then
        # revision, chunk by chunk) are not each timed from their common start
        self.phases: list[dict] = []
        self._last = time.perf_counter()

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress.tasks:
            self.progress.stop()
        else:  # nothing was shown: Progress.stop would still end with an empty line (above an error message)
            self.progress.live.transient = True
            self.progress.live.stop()
            self.progress.live.transient = False  # the next stage's bars stay

    def task(self, description: str, total: int):
        """A new bar; returns the callback a generator calls with (requests done, new tokens)."""
        task = self.progress.add_task(description, total=total, tokens=0, rate=0.0)
        start, tokens = time.perf_counter(), 0
        phase = {"name": description, "requests": 0, "tokens": 0, "seconds": 0.0}
        self.phases.append(phase)
        self._last = start

        def advance(done: int, new_tokens: int) -> None:
            nonlocal tokens
            tokens += new_tokens
            now = time.perf_counter()
            rate = tokens / max(now - start, 1e-9)
            self.progress.update(task, advance=done, tokens=tokens, rate=rate)
            phase.update(requests=phase["requests"] + done, tokens=tokens, seconds=round(phase["seconds"] + now - self._last, 3))
            self._last = now

        return advance

    def print(self, *args, **kwargs) -> None:
        """Print above the live bars, one line per message (a long path is not cut onto a line of its own)."""
        self.console.print(*args, **{"soft_wrap": True, **kwargs})
