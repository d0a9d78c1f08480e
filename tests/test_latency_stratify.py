"""Tiers: Sobol pools in a latency band, cached on disk, clear errors for empty tiers."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_latency_support import synthetic_table, tiny_space

from gpunet.latency.estimate import estimate_encodings
from gpunet.latency.stratify import EmptyTierError, Tier, all_tiers, plot_tiers, tier_pool
from gpunet.latency.table import Calibration
from gpunet.latency.timing import Timing
from gpunet.paths import CONF_DIR
from gpunet.space import canonical_encodings, load_space, sobol_encodings


@pytest.fixture
def setup(tmp_path):
    space = tiny_space()
    table = synthetic_table(tmp_path / "t.sqlite", space)
    latencies = estimate_encodings(space, table, sobol_encodings(space, 4096, seed=0), 10)
    target = float(np.median(latencies))
    tier = Tier("mid", target, 0.1 * target)
    return space, table, tier, tmp_path / "pools"


def test_the_pool_is_the_band_of_the_sobol_sample(setup):
    space, table, tier, cache = setup
    X, lat = tier_pool(space, table, tier, n=4096, seed=0, cache_dir=cache, num_classes=10)
    lo, hi = tier.band
    assert X.dtype == np.int16 and X.shape == (len(lat), space.length) and len(lat) > 0
    assert ((lat >= lo) & (lat <= hi)).all()
    assert np.array_equal(estimate_encodings(space, table, X, 10), lat)
    everything = sobol_encodings(space, 4096, seed=0)
    inside = estimate_encodings(space, table, everything, 10)
    band = everything[(inside >= lo) & (inside <= hi)]
    assert len(lat) == len(np.unique(band, axis=0))  # each network of the band, once
    assert len(list(cache.glob("*.png"))) == 1  # the histogram of the new pool


def test_a_canonical_pool_holds_each_network_once(tmp_path):
    space = load_space("cpu")  # stages 5 and 7 may be empty: many encodings per network
    table = synthetic_table(tmp_path / "t.sqlite", space)
    X = sobol_encodings(space, 4096, seed=0)
    latencies = estimate_encodings(space, table, X, 10)
    target = float(np.median(latencies))
    tier = Tier("mid", target, 0.2 * target)
    plain, _ = tier_pool(space, table, tier, n=4096, seed=0, cache_dir=tmp_path, num_classes=10)
    pool, lat = tier_pool(space, table, tier, n=4096, seed=0, cache_dir=tmp_path, num_classes=10,
                          canonical=True)
    assert len(list(tmp_path.glob("*.npz"))) == 2  # cached apart
    np.testing.assert_array_equal(canonical_encodings(space, pool), pool)
    np.testing.assert_array_equal(estimate_encodings(space, table, pool, 10), lat)  # same networks
    networks = np.unique(canonical_encodings(space, plain), axis=0)
    assert len(pool) == len(networks) == len(np.unique(pool, axis=0))  # each network once


def test_the_pool_is_cached_and_keyed_by_what_it_depends_on(setup):
    space, table, tier, cache = setup
    X, lat = tier_pool(space, table, tier, n=4096, seed=0, cache_dir=cache, num_classes=10)
    [pool_file] = cache.glob("*.npz")
    stamp = pool_file.stat().st_mtime_ns
    X2, lat2 = tier_pool(space, table, tier, n=4096, seed=0, cache_dir=cache, num_classes=10)
    assert np.array_equal(X, X2) and np.array_equal(lat, lat2)
    assert pool_file.stat().st_mtime_ns == stamp and len(list(cache.glob("*.npz"))) == 1
    tier_pool(space, table, tier, n=4096, seed=1, cache_dir=cache, num_classes=10)  # another seed
    tier_pool(space, table, tier, n=2048, seed=0, cache_dir=cache, num_classes=10)  # another N
    key, ns = next(iter(table.medians_ns().items()))
    table.put(key, {}, Timing(ns / 1e6 * 1.5, ns / 1e6 * 2, 3))  # the table changed
    tier_pool(space, table, tier, n=4096, seed=0, cache_dir=cache, num_classes=10)
    table.set_calibration(Calibration(1.0, 0.0, 0.0, 0.0, 0.0, 4))  # calibrated estimates
    tier_pool(space, table, tier, n=4096, seed=0, cache_dir=cache, calibrated=True, num_classes=10)
    assert len(list(cache.glob("*.npz"))) == 5


def test_an_empty_tier_reports_the_range_that_exists(setup):
    space, table, _, cache = setup
    latencies = estimate_encodings(space, table, sobol_encodings(space, 4096, seed=0), 10)
    far = Tier("far", 10 * float(latencies.max()), 0.1)
    with pytest.raises(EmptyTierError) as err:
        tier_pool(space, table, far, n=4096, seed=0, cache_dir=cache, num_classes=10)
    message = str(err.value)
    assert "tier far" in message and "holds none of 4,096 Sobol samples of search space 'tiny'" in message
    assert f"span {latencies.min():.3g}-{latencies.max():.3g} ms" in message
    assert not list(cache.glob("*.npz"))


@pytest.mark.parametrize("cfg, match", [
    ({"name": "x", "target_ms": 0.0, "tolerance_ms": 0.1}, "target_ms > 0"),
    ({"name": "x", "target_ms": 1.0, "tolerance_ms": 1.0}, "tolerance_ms < target_ms"),
    ({"name": "x", "target_ms": 1.0}, "needs name, target_ms and tolerance_ms"),
])
def test_bad_tiers_are_refused(cfg, match):
    with pytest.raises(ValueError, match=match):
        Tier.from_config(cfg)


def test_the_tier_group_has_the_documented_tiers():
    tiers = all_tiers()
    names = [t.name for t in tiers]
    assert {"0.5ms", "1ms", "1.5ms", "2ms"} <= set(names)
    for t in tiers:
        assert OmegaConf.load(CONF_DIR / "tier" / f"{t.name}.yaml").name == t.name
        assert t.band[0] < t.target_ms < t.band[1]
    bands = sorted(t.band for t in tiers)
    assert all(a[1] <= b[0] for a, b in zip(bands, bands[1:]))  # no network is in two tiers


def test_histogram_png(tmp_path):
    path = plot_tiers(np.random.default_rng(0).gamma(4, 0.2, 10_000), all_tiers(), "test",
                      tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


WIDE = Tier("wide", 50.0, 49.99)  # every network of the tiny space


def first_seen(X: np.ndarray) -> list[list[int]]:
    seen: dict[tuple[int, ...], None] = {}
    for row in X.tolist():
        seen.setdefault(tuple(row), None)
    return [list(row) for row in seen]


def test_a_pool_holds_each_network_once_in_first_sobol_order(setup):
    space, table, _, cache = setup
    everything = sobol_encodings(space, 4096, seed=0)
    distinct = first_seen(everything)
    assert len(distinct) < 4096  # 4,096 Sobol draws of a 3,072-network space repeat rows
    X, lat = tier_pool(space, table, WIDE, n=4096, seed=0, cache_dir=cache, num_classes=10)
    assert X.tolist() == distinct
    assert np.array_equal(lat, estimate_encodings(space, table, X, 10))
    X2, lat2 = tier_pool(space, table, WIDE, n=4096, seed=0, cache_dir=cache, num_classes=10)  # cached
    assert np.array_equal(X, X2) and np.array_equal(lat, lat2)


def test_pools_cached_with_repeated_rows_are_not_reused(setup):
    """A pool file written before pools were deduplicated (cache key without the format) holds
    repeated rows: it must not be read again."""
    space, table, _, cache = setup
    old_key = hashlib.sha256(json.dumps(
        {"space": space.to_dict(), "table": table.fingerprint(), "n": 4096, "seed": 0,
         "num_classes": 10, "calibrated": False}, sort_keys=True).encode()).hexdigest()[:20]
    lo, hi = WIDE.band
    everything = sobol_encodings(space, 4096, seed=0)
    cache.mkdir(parents=True)
    np.savez(cache / f"{space.name}-{old_key}-{lo:g}-{hi:g}ms.npz", encodings=everything,
             latencies_ms=estimate_encodings(space, table, everything, 10))
    X, _ = tier_pool(space, table, WIDE, n=4096, seed=0, cache_dir=cache, num_classes=10)
    assert len(np.unique(X, axis=0)) == len(X)
