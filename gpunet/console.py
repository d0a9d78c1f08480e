"""What the apps write to the console and their log files: each record once, no known noise, and
progress that suits where it goes.

- `setup()` runs at each app's edge (search, train, latency build) and in each search job: it
  filters the warnings below that are known and harmless (each by message and category, with why)
  and sends warnings through logging, so the real ones reach the run's log file as well.
- `route_lightning_logs()` runs before a Trainer is made: Lightning adds its own stream handler to
  the `lightning` logger (and, when imported before logging is set up, to `lightning.pytorch` and
  `lightning.fabric`, which then stop propagating), so its records were printed twice (its handler
  and Hydra's) or missed the log file. Where logging is set up (Hydra's job logging), its records
  go through the root handlers only. Its litlogger advert is dropped.
- `progress(...)` is the one progress factory: a tqdm bar when stderr is a terminal, else plain
  log lines with the count, rate, elapsed time and ETA every `every_percent` % or `every_s`
  seconds (so a log file holds no carriage returns and a line per step of progress). While a bar
  is open, whole lines written to the terminal (log records, prints) clear it and redraw it below
  them, so a line never starts after the bar; processes of other launchers' workers write to the
  terminal directly.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm

progress_log = logging.getLogger("gpunet.progress")

# Known, harmless warnings, filtered by message (a regex matched at its start) and category.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"`torch\.jit\.script` is deprecated", FutureWarning,
     "linear_operator (under gpytorch and BoTorch) scripts its functions when imported"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning,
     "Lightning's own pytree helper uses torch's deprecated LeafSpec at every fit"),
    (r"Checkpoint directory .* exists and is not empty", UserWarning,
     "a run directory always holds Hydra's .hydra/ and log file before training; our checkpoints "
     "have fixed names (last.ckpt, best.pth), and a run that finds last.ckpt resumes from it"),
)
# Lightning's SLURM hint, emitted wherever `srun` is installed and the process was not started by
# it. One process per device on one node needs no srun (and jobs on SLURM run under srun).
SRUN_HINT = (r"The `srun` command is available on your system but is not used", UserWarning)
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                     "lightning_fabric")
LITLOGGER_ADVERT = "💡 Tip: For seamless cloud logging"


class _WarningText(logging.Filter):
    """Warnings as log records (logging.captureWarnings) end in a newline: strip it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(a.rstrip() if isinstance(a, str) else a for a in record.args)
        return True


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LITLOGGER_ADVERT)


def _add_filter_once(logger: logging.Logger, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def setup() -> None:
    """Known-harmless warnings filtered, the others through logging. Idempotent."""
    for message, category, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    logging.captureWarnings(True)
    _add_filter_once(logging.getLogger("py.warnings"), _WarningText)


def route_lightning_logs(single_node: bool = True) -> None:
    """Lightning's records through the root logger's handlers only (where there are any), without
    its litlogger advert; its `srun` hint filtered on a single node. Call after importing it."""
    if single_node:
        warnings.filterwarnings("ignore", message=SRUN_HINT[0], category=SRUN_HINT[1])
    _add_filter_once(logging.getLogger("lightning.pytorch.utilities.rank_zero"), _DropAdvert)
    if not logging.getLogger().handlers:  # nothing else would print them: keep Lightning's own
        return
    for name in LIGHTNING_LOGGERS:
        if name not in logging.Logger.manager.loggerDict:
            continue
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # Lightning's console handlers, not files
                logger.removeHandler(handler)
        logger.propagate = True


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _rate(done: int, seconds: float, unit: str) -> str:
    if done <= 0 or seconds <= 0:
        return f"? {unit}/s"
    per_second = done / seconds
    return f"{per_second:.1f} {unit}/s" if per_second >= 1 else f"{1 / per_second:.1f} s/{unit}"


class PlainProgress:
    """Progress as plain lines: `desc: n/total (pct%), rate, elapsed, ETA[, postfix]`, written when
    a multiple of `every_percent` is passed (0: every update), after `every_s` seconds without a
    line, and at the end. Lines are INFO records of `gpunet.progress` where logging is set up (the
    apps' console and log file), else lines on stderr. The tqdm calls gpunet uses work alike."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0,
                 every_percent: float = 10.0, every_s: float = 30.0) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start = self._shown = initial
        self.every_percent, self.every_s = every_percent, every_s
        self._t0 = self._last = time.monotonic()
        self._postfix = ""
        self._lock = threading.Lock()

    def _step(self, n: int) -> int:
        return math.floor(100 * n / self.total / self.every_percent) if self.total else 0

    def _due(self, now: float) -> bool:
        if self.n == self._shown:
            return False
        if self.total and self.n >= self.total:
            return True
        if not self.every_percent or now - self._last >= self.every_s:
            return True
        return self._step(self.n) > self._step(self._shown)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed, done = now - self._t0, self.n - self._start
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} ({math.floor(100 * self.n / self.total)}%)"
        text += f", {_rate(done, elapsed, self.unit)}, elapsed {tqdm.format_interval(elapsed)}"
        if self.total:
            eta = (self.total - self.n) * elapsed / done if done > 0 else None
            text += f", ETA {tqdm.format_interval(eta) if eta is not None else '?'}"
        return text + (f", {self._postfix}" if self._postfix else "")

    def _emit(self, now: float) -> None:
        text = self.line(now)
        self._shown, self._last = self.n, now
        if logging.getLogger().handlers:
            progress_log.info(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.n += n
            now = time.monotonic()
            if self._due(now):
                self._emit(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        with self._lock:
            if self.n != self._shown:
                self._emit(time.monotonic())

    @contextmanager
    def suspended(self) -> Iterator[None]:
        yield

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Lines:
    """A terminal stream that writes whole lines above an open bar: it clears the bar, writes the
    lines, redraws the bar. A partial line waits for its end; `passthrough` writes at once."""

    def __init__(self, stream: TextIO, bar: tqdm) -> None:
        self.stream, self.bar, self.pending, self.passthrough = stream, bar, "", False

    def write(self, text: str) -> int:
        with self.bar.get_lock():
            if self.passthrough:
                self.stream.write(self.pending + text)
                self.pending = ""
                return len(text)
            self.pending += text
            if "\n" in self.pending:
                lines, _, self.pending = self.pending.rpartition("\n")
                self.bar.clear(nolock=True)
                self.stream.write(lines + "\n")
                self.stream.flush()
                self.bar.refresh(nolock=True)
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.stream.flush()

    def release(self) -> None:
        if self.pending:
            self.stream.write(self.pending)
            self.pending = ""
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _stream_handlers() -> Iterator[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                yield handler


class TerminalProgress(tqdm):
    """tqdm's bar on stderr, with sys.stdout and sys.stderr (and the log handlers writing to them,
    including those logging is set up with later) writing whole lines above it while it is open."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> None:
        super().__init__(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr,
                         dynamic_ncols=True)
        self._wrapped: dict[str, tuple[TextIO, _Lines]] = {}
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if is_terminal(stream) and not isinstance(stream, _Lines):
                self._wrapped[name] = (stream, _Lines(stream, self))
        self._swap(to_lines=True)

    def _swap(self, to_lines: bool) -> None:
        for name, (stream, lines) in self._wrapped.items():
            old, new = (stream, lines) if to_lines else (lines, stream)
            if getattr(sys, name) is old:
                setattr(sys, name, new)
            for handler in _stream_handlers():
                if handler.stream is old:
                    handler.setStream(new)
            if not to_lines:
                lines.release()

    def close(self) -> None:
        if getattr(self, "_wrapped", None):
            self._swap(to_lines=False)
            self._wrapped = {}
        super().close()

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """The bar hidden, and writes straight through, while something else owns the terminal
        (a job that runs in this process and draws its own bars)."""
        self.clear()
        for _, lines in self._wrapped.values():
            lines.passthrough = True
        try:
            yield
        finally:
            for _, lines in self._wrapped.values():
                lines.passthrough = False
            self.refresh()


def progress(total: int | None, desc: str, unit: str = "it", initial: int = 0,
             every_percent: float = 10.0, every_s: float = 30.0) -> TerminalProgress | PlainProgress:
    """A bar when stderr is a terminal, plain progress lines otherwise (see PlainProgress)."""
    if is_terminal(sys.stderr):
        return TerminalProgress(total, desc, unit, initial)
    return PlainProgress(total, desc, unit, initial, every_percent, every_s)
