"""Progress bars and status lines on stderr (stdout is reserved for ``--json`` documents)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

Advance = Callable[[int], None]


class Reporter:
    """Rich progress on stderr; ``quiet`` silences everything (used by tests and library callers)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
        return self._console

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        if self.quiet:
            yield lambda n=1: None
            return
        if not self.console.is_terminal:  # logs and CI: one line per finished task, no animation
            import time

            done = [0]
            start = time.perf_counter()
            yield lambda n=1: done.__setitem__(0, done[0] + n)
            count = f"{done[0]} items, " if done[0] else ""
            self.console.print(f"{description}: {count}{time.perf_counter() - start:.1f} s")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task_id, n)
