"""Building the table: enumerate, measure only what is missing, in parallel, resumable; configs."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf
from test_latency_support import TINY, table_inputs, tiny_space, write_space_dir

from gpunet.latency.backends import BackendUnavailable
from gpunet.latency.build import LatencySetup, build_table, ensure_table, measure_network
from gpunet.latency.estimate import estimate_encodings
from gpunet.latency.keys import spec_probes
from gpunet.latency.space_keys import reach
from gpunet.paths import CONF_DIR
from gpunet.space import NetworkSpec, encoding_to_spec, sobol_encodings

TINY_KEYS = len(reach(tiny_space(), 10).probes())


def test_build_measures_every_key_once_then_nothing(tmp_path, compose_cfg):
    cfg = compose_cfg(tmp_path, space=TINY)
    first = build_table(*table_inputs(cfg))
    assert (first.keys, first.present, first.measured) == (TINY_KEYS, 0, TINY_KEYS)
    assert len(first.table) == TINY_KEYS
    assert first.table.context["backend"] == "onnxruntime"
    assert first.table.context["settings"] == {"threads": 1, "opset": 17, "graph_optimization": "all",
                                               "clock": "thread"}
    second = build_table(*table_inputs(cfg))
    assert (second.present, second.measured) == (TINY_KEYS, 0)
    # the table now estimates every network of the space
    space = tiny_space()
    X = sobol_encodings(space, 64, seed=0)
    assert (estimate_encodings(space, ensure_table(*table_inputs(cfg)), X, 10) > 0).all()


def test_parallel_workers_fill_the_same_table(tmp_path, compose_cfg):
    cfg = compose_cfg(tmp_path, "latency.workers=2", space=TINY)
    report = build_table(*table_inputs(cfg))
    assert report.measured == TINY_KEYS and len(report.table) == TINY_KEYS
    rows = sqlite3.connect(report.table.path).execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    assert rows == TINY_KEYS


def test_measure_network_gives_milliseconds(tmp_path, compose_cfg):
    cfg = compose_cfg(tmp_path, space=TINY)
    spec = encoding_to_spec(tiny_space(), sobol_encodings(tiny_space(), 1, 0)[0], num_classes=10)
    assert 0 < measure_network(spec, LatencySetup.from_config(cfg)) < 100


def run_build(tmp_path, *overrides: str) -> subprocess.Popen:
    conf = write_space_dir(tmp_path)
    return subprocess.Popen(
        [sys.executable, "-m", "gpunet.latency.build", "--config-dir", str(conf), "search_space=tiny",
         f"latency.table={tmp_path / 'table.sqlite'}", "latency.num_classes=10", "latency.warmup=1",
         f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def count_rows(path) -> int:
    if not path.exists():
        return 0
    try:
        return sqlite3.connect(path, timeout=5).execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.e2e
def test_the_app_resumes_after_being_killed(tmp_path):
    table = tmp_path / "table.sqlite"
    proc = run_build(tmp_path, "latency.runs=400")  # slow enough to be killed midway
    deadline = time.monotonic() + 120
    while count_rows(table) < 5:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = count_rows(table)
    assert 5 <= done < TINY_KEYS
    out, err = run_build(tmp_path, "latency.runs=5").communicate(timeout=300)
    assert f"{TINY_KEYS:,} latency-table entries; {done:,} already in" in out, err
    assert f"measuring {TINY_KEYS - done:,} with 1 worker(s)" in out
    # not a terminal: progress lines (count, rate, ETA) with the log records, no bar
    assert f"measuring: {TINY_KEYS - done}/{TINY_KEYS - done} (100%)" in out
    assert count_rows(table) == TINY_KEYS
    summary = json.loads((tmp_path / "run" / "build_summary.json").read_text())
    assert summary["measured"] == TINY_KEYS - done and summary["keys"] == TINY_KEYS


@pytest.mark.e2e
def test_the_app_adds_a_network_given_as_arch(tmp_path):
    spec = encoding_to_spec(tiny_space(), sobol_encodings(tiny_space(), 1, 0)[0], num_classes=10)
    data = {**spec.to_dict(), "name": "net36", "resolution": 36}  # 36 px: not in the space
    spec_json = tmp_path / "net36.json"
    spec_json.write_text(json.dumps(data))
    out, err = run_build(tmp_path, "latency.runs=3", f"arch={spec_json}").communicate(timeout=300)
    space_keys = {p.key for p in reach(tiny_space(), 10).probes()}
    extra = len({p.key for p in spec_probes(NetworkSpec.from_dict(data))} - space_keys)
    assert extra > 0
    assert f"search space 'tiny' + network net36: {TINY_KEYS + extra:,} latency-table entries" in out, err
    assert count_rows(tmp_path / "table.sqlite") == TINY_KEYS + extra


@pytest.mark.parametrize("overrides, backend, precision", [
    ([], "onnxruntime", "fp32"),
    (["device=h100"], "tensorrt", "fp16"),
    (["device=a100"], "tensorrt", "fp16"),
    (["device=gv100"], "torch", "fp16"),
    (["device=h100", "latency=torch"], "torch", "fp16"),
    (["latency=torch", "device=h100"], "torch", "fp16"),
    (["latency=torch"], "torch", "fp32"),
])
def test_a_device_selects_its_backend_and_latency_overrides_it(composed, overrides, backend, precision):
    cfg = composed("latency_apps", *overrides)
    assert cfg.latency.name == backend and cfg.latency.precision == precision
    assert cfg.latency.table.endswith(f"{cfg.device.name}-{backend}-{precision}-b1.sqlite")


@pytest.mark.parametrize("device", sorted(p.stem for p in (CONF_DIR / "device").glob("*.yaml")))
def test_every_device_has_the_keys_training_and_latency_read(composed, device):
    cfg = composed("latency_apps", f"device={device}")
    d = cfg.device
    assert d.type in ("cpu", "cuda") and d.precision in ("fp32", "fp16") and d.batch_size == 1
    expected = ("cpu", "32-true") if d.type == "cpu" else ("gpu", "16-mixed")
    assert (d.accelerator, d.train_precision) == expected
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_search_space_default_is_cpu_and_table1_stays_available(composed):
    assert composed("latency_apps").search_space.name == "cpu"
    assert composed("latency_apps", "search_space=gpunet").search_space.name == "gpunet"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_building_for_a_gpu_without_tensorrt_names_the_extra(tmp_path, compose_cfg):
    cfg = compose_cfg(tmp_path, "device=h100", space=TINY)
    with pytest.raises(BackendUnavailable, match=r"gpunet\[tensorrt\]"):
        ensure_table(*table_inputs(cfg))


@pytest.mark.slow
def test_the_whole_cpu_space_table_builds(tmp_path, compose_cfg):
    cfg = compose_cfg(tmp_path, "latency.runs=50", "latency.warmup=10")
    report = build_table(*table_inputs(cfg))
    assert report.keys == 1183 and len(report.table) == 1183


# -- one head for every app: the data group's class count ----------------------------------------
def fill_synthetically(cfg) -> int:
    """Every key a build of cfg needs, with made-up timings in the context this machine measures
    in (so nothing is timed); returns how many."""
    from gpunet.config import plain
    from gpunet.latency.backends import create_backend
    from gpunet.latency.build import head_classes, table_path
    from gpunet.latency.table import LatencyTable
    from gpunet.latency.timing import Timing
    from gpunet.space import space_from_config

    backend = create_backend(plain(cfg.latency), plain(cfg.device))
    context = backend.context()
    backend.close()
    probes = reach(space_from_config(cfg.search_space), head_classes(cfg)).probes()
    with LatencyTable(table_path(plain(cfg.latency)), context) as table:
        table.put_many([(p.key, p.fields(), Timing(0.01 + 1e-5 * i, 0.03, 3))
                        for i, p in enumerate(probes)])
    return len({p.key for p in probes})


def test_a_default_build_is_the_table_a_default_search_uses(tmp_path, compose_cfg):
    built, searched = compose_cfg(tmp_path), compose_cfg(tmp_path, app="search")
    assert built.latency.num_classes == searched.latency.num_classes == searched.data.num_classes == 10
    keys = fill_synthetically(built)  # what `python -m gpunet.latency.build` leaves
    report = build_table(*table_inputs(searched))  # the search's table step
    assert (report.keys, report.present, report.measured) == (keys, keys, 0)


def test_the_stratify_pool_and_the_search_pool_agree(tmp_path, compose_cfg):
    from gpunet.latency.stratify import Tier, stratify_app, tier_pool

    built = compose_cfg(tmp_path, "stratify.samples=4096")
    searched = compose_cfg(tmp_path, app="search")
    fill_synthetically(built)
    summary = stratify_app(built, tmp_path / "out")
    wide = Tier("wide", 500.0, 499.99)
    setup, space = table_inputs(searched)
    _, pool = tier_pool(space, ensure_table(setup, space), wide, n=4096, seed=0,
                        cache_dir=tmp_path / "pools", num_classes=searched.latency.num_classes)
    assert summary["num_classes"] == 10
    assert summary["range_ms"] == [float(pool.min()), float(pool.max())]


def class_tree(root, classes: int) -> None:
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True)


def test_imagefolder_declares_its_class_count_and_it_must_match_the_tree(tmp_path, compose_cfg):
    from gpunet.latency.build import head_classes

    class_tree(tmp_path / "data", 3)
    root = f"data.root={tmp_path / 'data'}"
    for app in ("latency_apps", "search"):
        with pytest.raises(ValueError, match=r"needs data.num_classes.*has 3 class folders: add "
                                             r"data.num_classes=3"):
            table_inputs(compose_cfg(tmp_path, "data=imagefolder", root, app=app))
        with pytest.raises(ValueError, match=r"data.num_classes=1000, but .* has 3 class folders"):
            head_classes(compose_cfg(tmp_path, "data=imagefolder", root, "data.num_classes=1000", app=app))
        cfg = compose_cfg(tmp_path, "data=imagefolder", root, "data.num_classes=3", app=app)
        assert head_classes(cfg) == cfg.latency.num_classes == 3
