"""Progress of ``hpc-unet predict`` on stderr, in tiles: one 8000 x 8000 image is thousands of tiles and
minutes of work, so files alone say nothing. Throttled to one line every EVERY_S seconds (overwritten in
place on a terminal, one line each in a log), plus the first and the last. ``--quiet`` turns it off."""

from __future__ import annotations

import sys
import time
from typing import TextIO

EVERY_S = 2.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class TileProgress:
    """Counts tiles of the current file and files done; ``advance(n)`` after each batch of tiles."""

    def __init__(self, files: int, quiet: bool = False, stream: TextIO | None = None, every_s: float = EVERY_S
                 ) -> None:
        self.files, self.quiet, self.every_s = files, quiet, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.file_index, self.name = 0, ""
        self.done, self.total = 0, 0
        self.file_start = self.start
        self.finished_files_s: list[float] = []
        self.last_print = -float("inf")
        self.printed = False

    def begin_file(self, name: str, tiles: int) -> None:
        """A new file (or a whole stack) of ``tiles`` tiles starts."""
        if self.total:
            self.finished_files_s.append(time.perf_counter() - self.file_start)
        self.file_index += 1
        self.name, self.done, self.total = name, 0, tiles
        self.file_start = time.perf_counter()

    def advance(self, tiles: int) -> None:
        self.done += tiles
        now = time.perf_counter()
        if self.done >= self.total or now - self.last_print >= self.every_s:
            self._print(now)

    def _eta(self, now: float) -> float | None:
        spent = now - self.file_start
        if not self.done:
            return None
        this_file = spent / self.done * (self.total - self.done)
        remaining_files = self.files - self.file_index
        per_file = (sum(self.finished_files_s) + spent / self.done * self.total) / (len(self.finished_files_s) + 1)
        return this_file + remaining_files * per_file

    def _print(self, now: float) -> None:
        if self.quiet:
            return
        self.last_print = now
        eta = self._eta(now)
        where = f"file {self.file_index}/{self.files} ({self.name}): " if self.files > 1 else ""
        pct = 100 * self.done / self.total if self.total else 100.0
        line = (f"predict: {where}{self.done}/{self.total} tiles ({pct:.0f}%), {_clock(now - self.start)} elapsed"
                + (f", ETA {_clock(eta)}" if eta is not None else ""))
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.printed = True

    def close(self) -> None:
        if self.tty and self.printed and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
