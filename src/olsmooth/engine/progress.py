"""Progress of a long loop: a bar on a terminal, else a line every so often, so a log shows the job is alive."""

from __future__ import annotations

import sys
import time
from typing import Callable

from tqdm import tqdm

LINE_EVERY_S = 60.0
"""Without a terminal, the interval between progress lines."""
BAR_EVERY_STEPS = 10
"""On a terminal, how often the bar's figures are refreshed (each refresh may cost a device sync)."""


class Progress:
    """Counts steps of a loop of `total`; `due()` says when fresh figures are wanted, `show()` displays them.

    Figures are computed by the caller only when due, so a loop pays for them (a host sync on a GPU) rarely.
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, log: Callable[[str], None] | None = None,
                 every_s: float = LINE_EVERY_S) -> None:
        self.total, self.desc, self.every_s = total, desc, every_s
        self.terminal = enabled and sys.stderr.isatty()
        self.lines = enabled and not self.terminal
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.step = 0
        self._last_line = time.perf_counter()
        self._bar = tqdm(total=total, desc=desc, leave=False, unit="batch", disable=not self.terminal)

    def due(self) -> bool:
        """True when the next `show()` would be displayed: every few steps on a terminal, every `every_s` else."""
        if self.terminal:
            return self.step % BAR_EVERY_STEPS == 0 or self.step + 1 == self.total
        return self.lines and time.perf_counter() - self._last_line >= self.every_s

    def show(self, figures: dict[str, str]) -> None:
        """Display `figures` (name: formatted value) on the bar, or as one line."""
        if self.terminal:
            self._bar.set_postfix(figures)
        elif self.lines:
            text = "  ".join(f"{k} {v}" for k, v in figures.items())
            self.log(f"{self.desc}  step {self.step + 1}/{self.total}  {text}".rstrip())
            self._last_line = time.perf_counter()

    def update(self) -> None:
        """One step done."""
        self.step += 1
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
