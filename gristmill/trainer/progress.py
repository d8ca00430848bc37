"""The trainer's console progress on stderr: a bar redrawn in place on a terminal, plain lines otherwise.
`trainer train` shows its steps with it, `trainer evaluate` (and training's periodic evaluation) the rows scored."""
from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress bar on a terminal; a plain line every ~5% of the total otherwise (none with
    lines=False). With a label (`trainer ablate`: the run's name) always plain lines, every ~10%, prefixed with
    the label. A line reads `WHAT DONE/TOTAL DETAIL`, ending with an ETA from the work done since this object was
    made; `transient` erases the bar when the total is reached instead of leaving it on the terminal (an
    evaluation inside training, whose result line follows)."""

    def __init__(self, total: int, enabled: bool, *, start: int = 0, label: str | None = None, what: str = "step",
                 lines: bool = True, transient: bool = False):
        self.total, self.enabled, self.label, self.what = total, enabled and total > 0, label, what
        self.tty = sys.stderr.isatty() and label is None
        self.lines, self.transient = lines, transient
        self.every = max(1, total // (10 if label is not None else 20))
        self.start, self.last, self.t0 = start, start, time.perf_counter()

    def _eta(self, done: int) -> str:
        if done - self.start <= 0 or done >= self.total:
            return ""
        secs = int((time.perf_counter() - self.t0) / (done - self.start) * (self.total - done))
        h, rest = divmod(secs, 3600)
        return f" ETA {h}:{rest // 60:02d}:{rest % 60:02d}"

    def show(self, done: int, detail: str) -> None:
        """Report `done` of the total. Off a terminal a line is printed when `done` passes a multiple of the
        interval (work may advance by more than one: a batch of rows) and at the total."""
        if not self.enabled:
            return
        due = done // self.every > self.last // self.every or done >= self.total
        self.last = done
        if self.label is not None:
            if due:
                print(f"{self.label}: {self.what} {done}/{self.total} ({100 * done // self.total}%) {detail}"
                      f"{self._eta(done)}", file=sys.stderr, flush=True)
            return
        filled = int(30 * done / self.total)
        text = f"[{'#' * filled}{'.' * (30 - filled)}] {self.what} {done}/{self.total} {detail}{self._eta(done)}"
        if self.tty:
            if self.transient and done >= self.total:
                print("\r\033[K", end="", file=sys.stderr, flush=True)
            else:
                print("\r" + text + "\033[K", end="\n" if done >= self.total else "", file=sys.stderr, flush=True)
        elif self.lines and due:
            print(text, file=sys.stderr, flush=True)

    def update(self, step: int, loss: float, tok_s: float) -> None:
        """A training step: the loss and tokens/s after the count."""
        self.show(step, f"loss {loss:.4f} {tok_s:,.0f} tok/s")
