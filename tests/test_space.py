"""The search space config: Table 1 exactly, typed, and clear errors for bad files."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from gpunet.paths import CONF_DIR
from gpunet.space import load_space, space_from_config


def test_table1_stages(table1):
    s = table1.stages
    assert [st.block for st in s] == ["conv", "conv"] + ["fused_irb"] * 2 + ["irb"] * 4
    assert [st.stride for st in s] == [2, 1, 2, 2, 2, 1, 2, 1]
    assert s[2].fields["filters"].choices == (32, 48, 64, 80)
    assert s[6].fields["filters"].choices == tuple(range(128, 417, 32))
    assert s[7].fields["filters"].choices == tuple(range(256, 833, 64))
    assert s[5].fields["layers"].choices == tuple(range(0, 16))
    assert s[4].fields["layers"].choices == tuple(range(1, 11))
    assert s[3].fields["expansion"].choices == (2, 3, 4, 5, 6)
    assert s[1].shares_filters and "filters" not in s[1].fields
    assert table1.resolutions == tuple(range(224, 513, 32))
    assert table1.head_width == 1792


def test_table2_layout_is_41_digits(table1):
    digits = table1.digits
    assert table1.length == 41
    assert [(d.stage, d.field) for d in digits[:5]] == [
        (None, "resolution"), (0, "filters"), (1, "kernel"), (1, "act"), (1, "layers")]
    for stage in range(2, 8):
        fields = [d.field for d in digits if d.stage == stage]
        assert fields == ["filters", "kernel", "expansion", "se", "act", "layers"]


def _raw(name="gpunet"):
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "search_space" / f"{name}.yaml"))


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["stages"][2].update(block="mbconv"), "block 'mbconv'"),
    (lambda c: c["stages"][2].update(act=["relu", "gelu"]), "unknown activation"),
    (lambda c: c["stages"][2].update(kernel=[3, 4]), "odd"),
    (lambda c: c["stages"][3].update(stride=3), "stride must be 1 or 2"),
    (lambda c: c["stages"][3].pop("se"), "missing key 'se'"),
    (lambda c: c["stages"][3].update(colour="red"), "unknown key"),
    (lambda c: c["stages"][4].update(filters={"min": 10}), "needs keys min, max"),
    (lambda c: c["stages"][0].update(filters="shared"), "cannot be 'shared'"),
    (lambda c: c.pop("head_width"), "missing 'head_width'"),
])
def test_bad_space_configs_name_the_problem(mutate, message):
    cfg = _raw()
    mutate(cfg)
    with pytest.raises(ValueError, match=message):
        space_from_config(cfg)


def test_unknown_space_lists_known_ones():
    with pytest.raises(FileNotFoundError, match="gpunet"):
        load_space("no_such_space")
