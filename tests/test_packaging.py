"""Hydra finds the gpunet sweeper and the configs from a regular (non-editable) install too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # a regular install in a venv (the e2e marker: pyproject.toml)

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import gpunet, pathlib
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra import compose, initialize_config_dir
from gpunet.paths import CONF_DIR
assert 'site-packages' in gpunet.__file__, gpunet.__file__
assert [c for c in Plugins.instance().discover(Sweeper) if c.__name__ == 'GPUNetSweeper']
with initialize_config_dir(str(CONF_DIR), version_base='1.3'):
    cfg = compose('search', overrides=['searcher=random'], return_hydra_config=True)
assert cfg.hydra.sweeper._target_.endswith('GPUNetSweeper') and cfg.searcher.name == 'random'
print('ok', CONF_DIR)
"""


def test_regular_install_discovers_the_sweeper_and_configs(tmp_path):
    # A venv without system site-packages (so the editable install's finder is not loaded), with
    # the dependencies reachable through PYTHONPATH and gpunet installed as a regular wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    env = {"PYTHONPATH": deps, "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "outputs", "build", "*.egg-info", "__pycache__", ".*_cache", "experiments"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", site, str(source)], check=True, capture_output=True)
    out = subprocess.run([str(python), "-c", CHECK], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "site-packages/gpunet/conf" in out.stdout


def test_joblib_workers_check_memory_instead_of_collecting_garbage_after_every_job():
    # loky (joblib's process pool) runs gc.collect() after every task unless psutil is
    # importable: 0.3-0.5 s of idle worker per trial on a 2-core machine (async_schedule.md)
    from joblib.externals.loky import process_executor

    assert process_executor._USE_PSUTIL
