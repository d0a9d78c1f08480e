"""Fidelity: the statistics and the calibration fit, and the app end to end on a tiny space."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_latency_support import TINY, table_inputs, tiny_space

from gpunet.latency.build import ensure_table
from gpunet.latency.estimate import estimate_encodings, sum_encodings
from gpunet.latency.validate import fidelity, validate_app
from gpunet.space import sobol_encodings


def test_an_exact_linear_relation_is_recovered():
    rng = np.random.default_rng(0)
    sums = np.sort(rng.uniform(0.2, 2.0, 30))
    entries = np.sort(rng.integers(10, 30, 30))  # deeper networks are slower: the same order
    mparams = np.sort(rng.uniform(0.5, 5.0, 30))  # and larger
    measured = 0.8 * sums + 0.003 * entries + 0.05 + 0.1 * mparams
    result = fidelity(sums, entries, mparams, measured)
    cal = result.calibration
    assert (cal.a, cal.b, cal.c, cal.d) == pytest.approx((0.8, 0.003, 0.05, 0.1), abs=1e-9)
    assert result.kendall_tau == pytest.approx(1.0) and result.pearson_r > 0.99
    assert result.calibrated_mape_pct < 1e-6 and result.calibrated_loo_mape_pct < 1e-6
    assert result.mean_bias_ms == pytest.approx(float(np.mean(sums - measured)))
    assert result.mape_pct == pytest.approx(100 * float(np.mean(np.abs(sums - measured) / measured)))


def test_noise_shows_in_the_statistics():
    rng = np.random.default_rng(1)
    sums = rng.uniform(0.2, 2.0, 40)
    entries = rng.integers(10, 30, 40)
    measured = sums * rng.uniform(0.7, 1.3, 40)
    result = fidelity(sums, entries, rng.uniform(0.5, 5.0, 40), measured)
    assert result.kendall_tau < 0.9 and result.calibrated_mape_pct > 5
    assert result.calibrated_loo_mape_pct >= result.calibrated_mape_pct


def test_too_few_networks_are_refused():
    with pytest.raises(ValueError, match="at least 5 networks"):
        fidelity(np.ones(4), np.ones(4), np.ones(4), np.ones(4))


def test_validate_measures_writes_reports_and_stores_the_calibration(tmp_path, compose_cfg):
    cfg = compose_cfg(tmp_path, "validate.networks=6", space=TINY)
    result = validate_app(cfg, tmp_path / "out")
    assert result.networks == 6 and -1 <= result.kendall_tau <= 1 and result.mape_pct >= 0
    report = json.loads((tmp_path / "out" / "latency_fidelity.json").read_text())
    assert report["networks"] == 6 and report["context"]["backend"] == "onnxruntime"
    assert report["speed"] > 0  # timed beside the table's own entries: at the table's speed
    assert (tmp_path / "out" / "latency_fidelity.png").read_bytes()[:4] == b"\x89PNG"
    assert "Kendall tau" in (tmp_path / "out" / "latency_fidelity.md").read_text()
    rows = (tmp_path / "out" / "latency_fidelity.csv").read_text().splitlines()
    assert rows[0] == "encoding,entries,mparams,table_sum_ms,end_to_end_ms"
    assert len(rows) == 7 and all(float(r.split(",")[3]) > 0 for r in rows[1:])
    # the stored calibration is what calibrated estimates apply
    space, table = tiny_space(), ensure_table(*table_inputs(cfg))
    assert table.calibration() == result.calibration
    X = sobol_encodings(space, 20, seed=5)
    sums = sum_encodings(space, table, X, 10)
    cal = result.calibration
    assert np.allclose(estimate_encodings(space, table, X, 10, calibrated=True),
                       cal.a * sums.total_ns / 1e6 + cal.b * sums.entries + cal.c
                       + cal.d * sums.params / 1e6, rtol=1e-12)


def test_the_measured_networks_spread_over_the_latency_range():
    """Sobol networks are mostly small; the calibration must see the large ones too."""
    from gpunet.latency.validate import spread_over_latency

    rng = np.random.default_rng(0)
    sums = rng.lognormal(0.0, 0.5, 5000)  # a long right tail, as a space's latencies have
    chosen = spread_over_latency(sums, 20)
    assert len(set(chosen.tolist())) == 20
    picked = np.sort(sums[chosen])
    lo, hi = np.percentile(sums, [0.5, 99.5])
    assert picked[0] == pytest.approx(lo, rel=0.02) and picked[-1] == pytest.approx(hi, rel=0.02)
    assert np.allclose(np.diff(picked), (hi - lo) / 19, rtol=0.2)  # evenly spaced
    # a random draw of 20 would put about half below the median; here far fewer are
    assert (picked < np.median(sums)).sum() <= 6
