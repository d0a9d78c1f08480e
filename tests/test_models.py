"""Model builder, hub models in timm, analytic params/MACs vs forward hooks, ONNX parity."""

from __future__ import annotations

import stat

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from torch import nn

from gpunet.models import GPUNet, build_model, export_onnx, resolve_spec, spec_cost
from gpunet.models.baseline import TimmNetwork
from gpunet.space import encoding_to_spec, released_spec, save_spec
from gpunet.space.spec import NetworkSpec


def hook_count(model: nn.Module, resolution: int) -> tuple[int, int]:
    """Params by summing tensors; MACs by forward hooks on every Conv2d and Linear."""
    macs = 0

    def conv_hook(m, _, out):
        nonlocal macs
        macs += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, _, out):
        nonlocal macs
        macs += out.numel() * m.in_features

    handles = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, resolution, resolution))
    for h in handles:
        h.remove()
    return sum(p.numel() for p in model.parameters()), macs


@pytest.mark.parametrize("resolution", [32, 40, 57, 64])
def test_forward_shapes_at_several_resolutions(small_spec, resolution):
    spec = NetworkSpec(resolution, small_spec.layers, small_spec.head)
    model = build_model(spec)
    out = model(torch.randn(2, 3, resolution, resolution))
    assert out.shape == (2, 10)
    feats = model.forward_features(torch.randn(1, 3, resolution, resolution))
    assert tuple(feats.shape[1:]) == (64, *spec.input_shapes()[-1][1:])


def test_blocks_follow_the_spec(small_spec):
    model = build_model(small_spec, drop_path_rate=0.2)
    fused_se, fused, irb_s2, irb_res = model.blocks[1:]
    assert type(fused_se).__name__ == "EdgeResidual" and type(irb_s2).__name__ == "InvertedResidual"
    assert not fused_se.has_skip and fused.has_skip and irb_res.has_skip and not irb_s2.has_skip
    # SE squeezes to round(mid * 0.25 / e): mid = make_divisible(8 * 2) = 16 -> 2
    assert fused_se.se.conv_reduce.out_channels == 2
    assert isinstance(fused_se.se.act1, nn.SiLU) and isinstance(fused.bn1.act, nn.ReLU)
    # drop path rises linearly over the blocks, from 0 to drop_path_rate
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    # stride-2 convs pad k//2
    assert irb_s2.conv_dw.padding == (2, 2) and fused_se.conv_exp.padding == (1, 1)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("vector_seed", [0, 1, 2])
def test_analytic_params_and_macs_match_hooks_on_encodings(table1, vector_seed):
    rng = np.random.default_rng(vector_seed)
    v = [int(rng.integers(0, c)) for c in table1.cardinalities]
    v[0] = 0  # 224 px keeps the test fast
    spec = encoding_to_spec(table1, v, num_classes=100)
    cost = spec_cost(spec)
    assert (cost.params, cost.macs) == hook_count(build_model(spec), spec.resolution)


@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_p0"])
def test_analytic_params_and_macs_match_hooks_on_released(name):
    spec = released_spec(name)
    assert (spec_cost(spec).params, spec_cost(spec).macs) == hook_count(build_model(spec),
                                                                        spec.resolution)


@pytest.mark.parametrize("name, params_m", [("gpunet_0", 11.9), ("gpunet_1", 12.7),
                                            ("gpunet_2", 25.8)])
def test_released_parameter_counts_match_the_paper(name, params_m):
    # Table 3 of the paper (parameter counts do not depend on the padding difference).
    assert spec_cost(released_spec(name)).params / 1e6 == pytest.approx(params_m, abs=0.05)


def test_timm_create_model_hub_models():
    model = timm.create_model("gpunet_1", num_classes=7, drop_rate=0.3, drop_path_rate=0.2)
    assert isinstance(model, GPUNet) and model.num_classes == 7 and model.drop_rate == 0.3
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 288, 288) and cfg["crop_pct"] == 1.0
    assert cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN
    assert {"gpunet_0", "gpunet_1", "gpunet_2"} <= set(timm.list_models("gpunet*"))
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_pretrained_fails_clearly_and_checkpoint_path_loads(tmp_path):
    with pytest.raises(RuntimeError, match="no pretrained weights are bundled"):
        timm.create_model("gpunet_0", pretrained=True)
    model = timm.create_model("gpunet_0", num_classes=5)
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    loaded = timm.create_model("gpunet_0", num_classes=5, checkpoint_path=str(path))
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("name", "file"), [("gpunet_d1", "1.25ms-D"), ("gpunet_d2", "2.25ms-D")])
def test_timm_refuses_the_distill_family_with_the_reason(name, file):
    """Registered, so timm does not answer with its generic 'Unknown model'."""
    assert name in timm.list_models("gpunet*")
    with pytest.raises(ValueError, match=f"^{name}: {file} is from NVIDIA's 'distill' block family"):
        timm.create_model(name)
    with pytest.raises(ValueError, match="'distill' block family"):
        resolve_spec(name)


def test_resolve_spec_accepts_names_paths_and_encodings(table1, tmp_path):
    assert resolve_spec("gpunet_2").resolution == 384
    path = tmp_path / "net.json"
    spec = encoding_to_spec(table1, [1] * 41)
    save_spec(spec, path)
    assert resolve_spec(str(path)) == spec
    assert resolve_spec(",".join(["1"] * 41), table1).layers == spec.layers
    assert resolve_spec([1] * 41, table1).layers == spec.layers
    with pytest.raises(ValueError, match="neither a hub model"):
        resolve_spec("gpunet_9")


def _onnx_parity(model: nn.Module, resolution: int, tmp_path) -> float:
    path = export_onnx(model, tmp_path / "m.onnx", (1, 3, resolution, resolution))
    onnx.checker.check_model(onnx.load(str(path)))
    assert onnx.load(str(path)).opset_import[0].version >= 17
    x = torch.randn(1, 3, resolution, resolution)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


def test_onnx_export_parity_spec(small_spec, tmp_path):
    assert _onnx_parity(build_model(small_spec), small_spec.resolution, tmp_path) < 1e-4


def test_onnx_export_parity_hub_model(tmp_path):
    model = timm.create_model("gpunet_0", num_classes=10)
    assert _onnx_parity(model, 96, tmp_path) < 1e-4


def test_export_refuses_old_opset(small_spec, tmp_path):
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(build_model(small_spec), tmp_path / "m.onnx", (1, 3, 40, 40), opset=13)
    assert not list(tmp_path.iterdir())


def test_onnx_export_gets_a_normal_files_mode(small_spec, tmp_path):
    """Like any file its process creates (the umask's mode, 0644 under umask 022), not 0600."""
    (tmp_path / "reference").write_text("")
    path = export_onnx(build_model(small_spec), tmp_path / "m.onnx", (1, 3, 40, 40))
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "reference").stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "reference"]  # no temp file left


@pytest.mark.parametrize("network", ["gpunet_0", "mobilenetv3_large_100"])
def test_ten_class_networks_start_at_chance_loss(network):
    """TF's classifier init (bound 1/sqrt(classes)) made a fresh 10-class network's loss 5-7:
    a short proxy run spent its first epoch undoing it. Searched and baseline networks now start
    near ln(10), as a 1000-class network does with TF's init."""
    if network.startswith("gpunet"):
        released = released_spec(network)
        model = build_model(NetworkSpec(64, released.layers, released.head), num_classes=10)
    else:
        model = build_model(TimmNetwork(network, 64), num_classes=10)
    torch.manual_seed(0)
    with torch.no_grad():
        logits = model.train()(torch.randn(32, 3, 64, 64))
    loss = nn.functional.cross_entropy(logits, torch.randint(0, 10, (32,)))
    assert abs(loss.item() - np.log(10)) < 0.3
