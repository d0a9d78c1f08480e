"""Recipe, data, early-stopping rule and logger settings of the trainer, without training."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from timm.optim import RMSpropTF

from gpunet.checks import recipe_warnings
from gpunet.errors import ConfigError
from gpunet.paths import CONF_DIR
from gpunet.train.callbacks import MedianThresholds, median_stop
from gpunet.train.data import build_datamodule
from gpunet.train.loggers import run_id, wandb_mode
from gpunet.train.module import CandidateModule
from gpunet.train.recipe import build_optimizer, build_scheduler, gradient_clipping, precision, scaled_lr

GPUNET = OmegaConf.load(CONF_DIR / "recipe" / "gpunet.yaml")
PROXY = OmegaConf.load(CONF_DIR / "recipe" / "proxy.yaml")


def data_cfg(group_file: str, **overrides) -> OmegaConf:
    cfg = OmegaConf.load(CONF_DIR / "data" / f"{group_file}.yaml")
    return OmegaConf.merge(cfg, overrides)


def test_gpunet_recipe_is_the_papers_table_5() -> None:
    table5 = {"sched": "step", "decay_epochs": 2.4, "decay_rate": 0.97, "opt": "rmsproptf",
              "batch_size": 192, "epochs": 450, "opt_eps": 1e-3, "warmup_lr": 1e-6,
              "weight_decay": 1e-5, "drop": 0.3, "drop_path": 0.2, "ema": True, "ema_decay": 0.9999,
              "aa": "rand-m9-mstd0.5", "remode": "pixel", "reprob": 0.2, "lr": 0.06, "amp": True,
              "crop_pct": 1.0, "lr_base_batch": 1536, "smoothing": 0.1}
    assert {k: GPUNET[k] for k in table5} == table5
    assert set(GPUNET) == set(PROXY), "both recipes must set the same knobs"


def test_gradient_clipping_is_off_by_default_and_refuses_bad_settings() -> None:
    assert gradient_clipping(GPUNET) == {} and gradient_clipping(PROXY) == {}
    clipped = OmegaConf.merge(PROXY, {"clip_grad": 1})
    assert gradient_clipping(clipped) == {"gradient_clip_val": 1.0, "gradient_clip_algorithm": "norm"}
    for bad in ({"clip_grad": 0}, {"clip_grad": -1}, {"clip_grad": 1, "clip_mode": "agc"}):
        with pytest.raises(ConfigError, match="clip_grad"):
            gradient_clipping(OmegaConf.merge(PROXY, bad))


@pytest.mark.parametrize(("overrides", "warned"), [
    ((), False),  # the search's 3 epochs at the proxy's lr 0.24
    (("recipe.epochs=10",), True),  # measured to diverge
    (("recipe.epochs=10", "recipe.clip_grad=1.0"), False),
    (("recipe.epochs=20", "recipe.lr=0.06"), False),  # the paper's lr: measured stable
    (("recipe=gpunet",), False),
])
def test_a_long_unclipped_run_at_the_proxys_lr_is_warned_about(composed, overrides, warned) -> None:
    """10 epochs of the proxy recipe diverged unless clipped (proxy_rank_digits*.md): a user who
    only raises recipe.epochs is told to add recipe.clip_grad."""
    found = [w for w in recipe_warnings(composed("train", "arch=tiny", *overrides)) if "clip_grad" in w]
    assert bool(found) is warned, found
    if warned:
        assert "recipe.clip_grad=1.0" in found[0] and "recipe.epochs=10" in found[0]


def test_optimizer_and_step_schedule_follow_the_recipe() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(model, GPUNET, global_batch=384)
    assert isinstance(opt, RMSpropTF)
    assert scaled_lr(GPUNET, 384) == pytest.approx(0.015)
    assert opt.defaults["eps"] == 1e-3
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 1e-5}  # no decay on bias/BN
    sched = build_scheduler(opt, GPUNET, updates_per_epoch=10)
    lrs = {}
    for epoch in (0, 3, 4, 5, 10):
        sched.step(epoch)
        lrs[epoch] = opt.param_groups[0]["lr"]
    assert lrs[0] == pytest.approx(1e-6)  # warm-up starts at warmup_lr
    for epoch in (3, 4, 5, 10):  # after warm-up: x0.97 every 2.4 epochs
        assert lrs[epoch] == pytest.approx(0.015 * 0.97 ** math.floor(epoch / 2.4))


def test_proxy_schedule_warms_up_per_update_within_the_run() -> None:
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, PROXY, global_batch=PROXY.batch_size)
    sched = build_scheduler(opt, PROXY, updates_per_epoch=20)
    sched.step_update(10)
    mid_warmup = opt.param_groups[0]["lr"]
    sched.step_update(20)
    peak = scaled_lr(PROXY, PROXY.batch_size)
    # timm's cosine counts from the first update: after one epoch of warm-up the lr is the
    # cosine's value at warmup_epochs / epochs of the run, not the peak itself
    done = PROXY.warmup_epochs / PROXY.epochs
    after_warmup = PROXY.min_lr + 0.5 * (peak - PROXY.min_lr) * (1 + math.cos(math.pi * done))
    assert 0 < mid_warmup < after_warmup
    assert opt.param_groups[0]["lr"] == pytest.approx(after_warmup, rel=1e-3)
    sched.step_update(20 * PROXY.epochs)
    assert opt.param_groups[0]["lr"] == pytest.approx(PROXY.min_lr, abs=1e-7)


@pytest.mark.parametrize("recipe", [GPUNET, PROXY], ids=["gpunet", "proxy"])
def test_every_batchnorm_of_the_candidate_has_the_recipes_momentum(recipe, small_spec) -> None:
    model = CandidateModule(small_spec, 10, recipe).model
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and {m.momentum for m in norms} == {recipe.bn_momentum}


def test_channels_last_trains_the_same_network_in_nhwc(small_spec) -> None:
    """The device's memory format moves the weights and each batch to NHWC and changes nothing
    else: same weights, same outputs (up to float rounding), same state_dict keys."""
    torch.manual_seed(0)
    plain = CandidateModule(small_spec, 10, PROXY)
    nhwc = CandidateModule(small_spec, 10, PROXY, channels_last=True)
    nhwc.load_state_dict(plain.state_dict())
    # (a 1x1 or depthwise kernel is both NCHW- and NHWC-contiguous: only the others tell them apart)
    convs = [m.weight for m in nhwc.model.modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) and m.weight.shape[1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                         for w in convs)
    x = torch.randn(4, 3, small_spec.resolution, small_spec.resolution)
    nhwc_x = nhwc.in_memory_format(x)
    assert nhwc_x.is_contiguous(memory_format=torch.channels_last) and not nhwc_x.is_contiguous()
    assert plain.in_memory_format(x).is_contiguous()
    plain.eval(), nhwc.eval()
    torch.testing.assert_close(nhwc(nhwc_x), plain(x), rtol=1e-4, atol=1e-5)
    assert nhwc.state_dict().keys() == plain.state_dict().keys()


def test_precision_comes_from_the_device_when_the_recipe_uses_amp() -> None:
    gpu = OmegaConf.create({"train_precision": "16-mixed"})
    assert precision(GPUNET, gpu) == "16-mixed"
    assert precision(OmegaConf.merge(GPUNET, {"amp": False}), gpu) == "32-true"


def test_digits_are_upsampled_rgb_with_a_fixed_split() -> None:
    dm = build_datamodule(data_cfg("digits"), PROXY, resolution=32)
    assert dm.num_classes == 10 and (len(dm.train), len(dm.val)) == (1437, 360)
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (PROXY.batch_size, 3, 32, 32) and y.dtype == torch.int64
    again = build_datamodule(data_cfg("digits"), PROXY, resolution=32)
    assert (again.val.labels == dm.val.labels).all() and (again.val.images == dm.val.images).all()


def test_fake_data_has_the_configured_shape() -> None:
    dm = build_datamodule(data_cfg("fake", num_classes=7, train_size=40, val_size=8), PROXY, 48)
    x, y = next(iter(dm.val_dataloader()))
    assert dm.num_classes == 7 and x.shape == (8, 3, 48, 48) and int(y.max()) < 7


def write_tree(root, splits=("train", "val"), classes=("cat", "dog"), per_class=3) -> None:
    for split in splits:
        for i, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for j in range(per_class):
                Image.new("RGB", (40 + j, 30), (50 * i, 20 * j, 90)).save(root / split / name / f"{j}.png")


def test_imagefolder_tree_is_resized_to_the_resolution(tmp_path) -> None:
    write_tree(tmp_path)
    recipe = OmegaConf.merge(PROXY, {"batch_size": 2})
    dm = build_datamodule(data_cfg("imagefolder", root=str(tmp_path), num_workers=0), recipe, 24)
    assert dm.num_classes == 2 and len(dm.train) == 6
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 24, 24)
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 24, 24)


@pytest.mark.parametrize("layout", ["missing", "no_val", "empty"])
def test_bad_imagefolder_root_fails_at_once_naming_the_path(tmp_path, layout) -> None:
    root = tmp_path / "data"
    if layout == "no_val":
        write_tree(root, splits=("train",))
    elif layout == "empty":
        (root / "train").mkdir(parents=True)
        (root / "val").mkdir()
    with pytest.raises(FileNotFoundError, match=str(root)):
        build_datamodule(data_cfg("imagefolder", root=str(root)), PROXY, 32)


def test_unknown_data_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'mnist' is not one of"):
        build_datamodule(data_cfg("fake", name="mnist"), PROXY, 32)


def test_median_stopping_rule() -> None:
    done = [[0.2, 0.4, 0.6], [0.3, 0.5, 0.7], [0.1, 0.2, 0.3]]  # running means at 2: .3 .4 .15

    def median_stop_vs(curve, completed, grace_epochs, min_completed):
        return median_stop(curve, MedianThresholds.from_curves(completed), grace_epochs, min_completed)

    assert not median_stop_vs([0.1, 0.2], done, grace_epochs=2, min_completed=1)  # within the grace
    assert not median_stop_vs([0.1, 0.2, 0.3], done[:1], grace_epochs=0, min_completed=2)  # too few
    assert median_stop_vs([0.1, 0.29], done, grace_epochs=1, min_completed=3)  # best .29 < median .3
    assert not median_stop_vs([0.1, 0.31], done, grace_epochs=1, min_completed=3)
    assert median_stop_vs([0.1, 0.1, 0.1, 0.1], done, grace_epochs=1, min_completed=3)  # longer curve


def test_median_thresholds_round_trip_and_none_before_the_search_writes_them(tmp_path) -> None:
    path = tmp_path / "median_stop.json"
    assert MedianThresholds.read(path) == MedianThresholds()  # never stops
    thresholds = MedianThresholds.from_curves([[0.2, 0.4], [0.3, 0.5], [0.1]])
    thresholds.write(path)
    assert MedianThresholds.read(path) == thresholds and thresholds.completed == 3


def test_wandb_is_offline_unless_told_otherwise(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(None) == "disabled" and wandb_mode("offline") == "offline"


def test_run_id_is_stable_per_output_dir(tmp_path) -> None:
    assert run_id(tmp_path / "3") == run_id(tmp_path / "." / "3") != run_id(tmp_path / "4")
