"""Rich progress bars that show tokens/s while a stage generates."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    """One live progress display per run; each generation phase gets its own bar."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[tokens]:>7} tok  {task.fields[rate]:>7.1f} tok/s"),
            TimeElapsedColumn(),
            console=self.console,
        )

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def task(self, description: str, total: int):
        """A new bar; returns the callback a generator calls with (requests done, new tokens)."""
        task = self.progress.add_task(description, total=total, tokens=0, rate=0.0)
        start, tokens = time.perf_counter(), 0

        def advance(done: int, new_tokens: int) -> None:
            nonlocal tokens
            tokens += new_tokens
            rate = tokens / max(time.perf_counter() - start, 1e-9)
            self.progress.update(task, advance=done, tokens=tokens, rate=rate)

        return advance

    def print(self, *args, **kwargs) -> None:
        """Print above the live bars."""
        self.console.print(*args, **kwargs)
