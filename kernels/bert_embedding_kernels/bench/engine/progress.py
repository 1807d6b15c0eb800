"""A small progress bar on stderr for long measurements (no dependency needed)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "sweep") as bar: bar.update(note)``.

    Redraws one line on a terminal; elsewhere (CI logs) it prints only the
    final line, so logs stay readable.
    """

    def __init__(self, total: float, label: str, stream=None, width: int = 30, unit: str = ""):
        self.total = total if total > 0 else 1
        self.unit = unit  # "s": done and total are seconds (bar.show(elapsed))
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.done = 0
        self.start = time.perf_counter()
        self.interactive = getattr(self.stream, "isatty", lambda: False)()

    def update(self, note: str = "") -> None:
        self.done += 1
        if self.interactive:
            self._draw(note, end="\r")

    def show(self, done: float, note: str = "") -> None:
        """Set how much is done (seconds, with ``unit="s"``) and redraw."""
        self.done = done
        if self.interactive:
            self._draw(note, end="\r")

    def _draw(self, note: str, end: str) -> None:
        filled = min(self.width, int(self.width * self.done / self.total))
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        if self.unit:
            count = f"{self.done:.1f}/{self.total:g} {self.unit}"
        else:
            count = f"{self.done}/{self.total}"
        line = f"{self.label} [{bar}] {count} {elapsed:5.1f}s {note}"
        self.stream.write(line[:120].ljust(120) + end)
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self._draw("done", end="\n")
