"""What real runs leave on the console and in their log files (issue 14 items 4 and 5).

Every run is a real subprocess whose output goes to a pipe or a file (not a terminal): each log
line once, none of the known, harmless warnings and adverts, no carriage returns or terminal
escapes, and plain progress lines (count, rate, ETA) instead of bars. One run on a pseudo-terminal
checks that a terminal still gets a bar.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from test_search_e2e import TESTS, search_cmd

pytestmark = pytest.mark.e2e  # the apps run in subprocesses (the e2e marker: pyproject.toml)

ENV = {**os.environ, "PYTHONPATH": str(TESTS), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
# Known and harmless: Lightning's litlogger advert, its SLURM `srun` hint, its warnings about the
# run directory (Hydra's files) and the logging interval, torch deprecations inside Lightning and
# linear_operator.
NOISE = ("litlogger", "`srun` command is available", "exists and is not empty", "log_every_n_steps",
         "LeafSpec", "torch.jit.script")
RECORD = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]")  # a log record's time stamp
SMALLEST = "[" + ",".join(["0"] * 41) + "]"


def run_logged(cmd: list[str], cwd: Path, log: Path) -> str:
    """Run with stdout and stderr in one file, like `cmd > log 2>&1`; returns its text."""
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, env=ENV, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_bytes().decode()  # as written: read_text() would turn \r into \n
    assert proc.returncode == 0, text[-5000:]
    return text


def assert_plain(text: str, where: str) -> None:
    """No bar artefacts, no known noise, and a log record only ever at the start of a line."""
    assert "\r" not in text, f"carriage returns in {where}"
    assert "\x1b[" not in text, f"terminal escapes in {where}"
    for noise in NOISE:
        assert noise not in text, f"{noise!r} in {where}"
    for line in text.splitlines():
        starts = [m.start() for m in RECORD.finditer(line)]
        assert all(s == 0 for s in starts), f"two things share a line in {where}: {line!r}"


def messages(log_text: str) -> list[str]:
    """The messages of a Hydra log file's records (what follows '[time][logger][LEVEL] - ')."""
    return [line.split("] - ", 1)[1] for line in log_text.splitlines() if "] - " in line]


def test_search_trials_log_each_line_once_with_plain_progress(shared, tmp_path):
    sweep = tmp_path / "s"
    text = run_logged(search_cmd(shared, sweep, "objective=train", "searcher=random",
                                 "search.n_trials=2", "recipe.epochs=2", "data=fake",
                                 "data.train_size=64", "data.val_size=32", "recipe.batch_size=16"),
                     tmp_path, tmp_path / "out.log")
    assert_plain(text, "the search's output")
    # each Lightning message once per trial (one handler), and the trial's epochs as plain lines
    assert text.count("`Trainer.fit` stopped: `max_epochs=2` reached.") == 2, text[-3000:]
    assert len(re.findall(r"epoch: 2/2 \(100%\)", text)) == 2, text[-3000:]
    # the search's own progress: plain lines with count, rate (s/trial, or trial/s when under a
    # second a trial, as on an idle machine) and ETA
    for n in (1, 2):
        assert re.search(rf"s: {n}/2 \({50 * n}%\), [\d.]+ (s/trial|trial/s), elapsed .*, ETA ", text), \
            text[-3000:]
    for trial in ("0000", "0001"):
        log = (sweep / "trials" / trial / "__main__.log").read_bytes().decode()
        assert_plain(log, f"trial {trial}'s log")
        counts = Counter(messages(log))
        assert max(counts.values()) == 1, [m for m, c in counts.items() if c > 1]
        assert counts["`Trainer.fit` stopped: `max_epochs=2` reached."] == 1
        epochs = [m for m in counts if re.match(r"epoch: \d/2 \(\d+%\)", m)]
        assert len(epochs) == 2 and "val/top1=" in epochs[-1] and "ETA" in epochs[0], epochs


def test_train_app_logs_lightning_once_in_its_log_file(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "gpunet.train", "search_space=gpunet", f"arch={SMALLEST}", "data=fake",
           "data.resolution=32", "data.train_size=64", "data.val_size=32", "recipe.batch_size=16",
           "recipe.epochs=2", f"hydra.run.dir={run_dir}"]
    text = run_logged(cmd, tmp_path, tmp_path / "out.log")
    assert_plain(text, "the train app's output")
    assert text.count("`Trainer.fit` stopped: `max_epochs=2` reached.") == 1
    log = (run_dir / "__main__.log").read_bytes().decode()
    assert_plain(log, "__main__.log")
    counts = Counter(messages(log))
    assert max(counts.values()) == 1
    assert counts["GPU available: False, used: False"] == 1  # Lightning's records reach the file
    assert counts["`Trainer.fit` stopped: `max_epochs=2` reached."] == 1
    assert [m.split(",")[0] for m in counts if m.startswith("epoch: ")] == ["epoch: 1/2 (50%)",
                                                                          "epoch: 2/2 (100%)"]


def build_cmd(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "gpunet.latency.build", "search_space=tiny",
            f"hydra.searchpath=[file://{TESTS / 'conf'}]", f"latency.table={tmp_path / 'fresh.sqlite'}",
            "latency.runs=5", "latency.warmup=2", f"hydra.run.dir={tmp_path / 'run'}"]


def test_latency_build_redirected_to_a_file_writes_progress_lines(tmp_path):
    text = run_logged(build_cmd(tmp_path), tmp_path, tmp_path / "build.log")
    assert_plain(text, "the build's redirected output")
    lines = [line for line in text.splitlines() if "measuring: " in line and "%" in line]
    assert len(lines) >= 3, text  # periodic: every 10% (or 30 s)
    assert all(re.search(r"measuring: \d+/\d+ \(\d+%\), [\d.]+ (entry/s|s/entry), elapsed \S+, ETA \S+",
                         line) for line in lines), lines
    assert re.search(r"measuring: (\d+)/\1 \(100%\),", lines[-1]), lines[-1]
    assert_plain((tmp_path / "run" / "build.log").read_bytes().decode(), "the build's log file")


def test_latency_build_on_a_terminal_draws_a_bar(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100
    proc = subprocess.Popen(build_cmd(tmp_path), cwd=tmp_path, env=ENV, stdin=follower,
                            stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "\r" in text and re.search(r"measuring: +\d+%\|", text), text[-2000:]  # tqdm's bar
    assert not re.search(r"measuring: \d+/\d+ \(", text)  # and no plain lines

