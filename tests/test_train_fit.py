"""Real Lightning training of tiny candidates (32 px, fake or digits data) through fit_candidate."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import timm
import torch
from omegaconf import DictConfig, OmegaConf

from gpunet.errors import ConfigError
from gpunet.models import build_model, resolve_spec
from gpunet.models.baseline import TimmNetwork
from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec
from gpunet.train import fit_candidate
from gpunet.train.callbacks import MedianThresholds
from gpunet.train.module import CandidateModule
from gpunet.train.run import TrainSettings, training_resolution

TINY = NetworkSpec(32, (LayerSpec("conv", 3, 8, 2, 3, "swish"),
                        LayerSpec("fused_irb", 8, 16, 2, 3, "relu", 2.0),
                        LayerSpec("irb", 16, 16, 1, 3, "swish", 2.0, se=True)),
                   HeadSpec(16, 32, 10), name="tiny")
FAST = ["search_space=gpunet", "recipe.batch_size=16", "trainer.enable_progress_bar=false"]
FAKE = ["data=fake", "data.train_size=64", "data.val_size=32"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def config(composed) -> Callable[..., DictConfig]:
    """`config(*overrides)`: train.yaml with small fake data unless the overrides pick the data."""

    def get(*overrides: str) -> DictConfig:
        data = [] if any(o.startswith("data=") for o in overrides) else FAKE
        return composed("train", "arch=tiny", *FAST, *data, *overrides)

    return get


def test_a_run_saves_its_curve_and_resumes_where_it_stopped(tmp_path, config) -> None:
    start = time.perf_counter()
    first = fit_candidate(config("recipe.epochs=2"), TINY, tmp_path)
    first_s = time.perf_counter() - start
    assert first.status == "completed" and first.epochs == 2 and first.error is None
    assert first.best_top1 == max(first.curve) and 0 <= first.best_top1 <= 1
    assert json.loads((tmp_path / "curve.json").read_text())["curve"] == first.curve
    assert first.checkpoint == tmp_path / "last.ckpt" and first.best_weights == tmp_path / "best.pth"
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 1
    # one checkpoint (resume) and the best epoch's weights only: no best.ckpt beside it
    assert sorted(p.name for p in tmp_path.glob("*.*")) == ["best.pth", "curve.json", "last.ckpt"]
    assert first.seconds_before_resume == 0

    longer = fit_candidate(config("recipe.epochs=3"), TINY, tmp_path)  # one more epoch only
    assert longer.status == "completed" and longer.curve[:2] == first.curve and longer.epochs == 3
    versions = sorted(p.name for p in (tmp_path / "csv").iterdir())
    assert versions == ["version_0", "version_1"]  # the first attempt's log is kept
    # the first attempt's time came with the checkpoint (up to its last save: not all of it)
    assert 0 < longer.seconds_before_resume < first_s
    again = fit_candidate(config("recipe.epochs=3"), TINY, tmp_path)  # already done: no training
    assert again.curve == longer.curve
    assert again.seconds_before_resume > longer.seconds_before_resume  # both attempts before it


def test_the_proxy_trains_at_a_fraction_of_the_resolution_and_caps_its_epochs(tmp_path, config) -> None:
    assert config().recipe.resolution_scale == 1.0  # the default proxy trains at full resolution
    assert TrainSettings.from_config(config()).channels_last  # the CPU device trains NHWC
    assert not TrainSettings.from_config(config("device=h100")).channels_last
    # fake data: 64 images, batch 16
    cfg = config("recipe.epochs=2", "recipe.train_batches_per_epoch=3", "recipe.resolution_scale=0.5")
    assert cfg.recipe.name == "proxy"
    assert training_resolution(TINY.resolution, cfg.data, cfg.recipe) == 16
    assert training_resolution(48, cfg.data, cfg.recipe) == 24
    assert training_resolution(48, OmegaConf.create({"resolution": 40}), cfg.recipe) == 40  # data's wins
    assert training_resolution(48, cfg.data, OmegaConf.create({})) == 48  # a recipe without the knob
    fit_candidate(cfg, TINY, tmp_path)
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 2 * 3  # not 2 * 4
    fit_candidate(config("recipe.epochs=1", "recipe.train_batches_per_epoch=null"), TINY, tmp_path / "all")
    assert torch.load(tmp_path / "all" / "last.ckpt", weights_only=False)["global_step"] == 4


def test_best_weights_are_the_best_epochs_and_can_be_turned_off(tmp_path, config) -> None:
    from gpunet.train.callbacks import CURVE_METRIC

    result = fit_candidate(config("recipe.epochs=3"), TINY, tmp_path / "on")
    saved = torch.load(result.best_weights, weights_only=True)  # as timm's checkpoint_path= loads it
    assert saved[CURVE_METRIC] == result.best_top1 == max(result.curve)
    assert saved["epoch"] == result.curve.index(max(result.curve))  # the first epoch that reached it
    assert set(saved["state_dict_ema"]) == set(build_model(TINY).state_dict())
    off = fit_candidate(config("recipe.epochs=1", "best_weights=false"), TINY, tmp_path / "off")
    assert off.best_weights is None and off.checkpoint == tmp_path / "off" / "last.ckpt"
    assert not list((tmp_path / "off").glob("best*"))


def test_digits_with_the_paper_recipe_and_a_hub_model(tmp_path, config) -> None:
    """gpunet_0 at 32 px with Table 5 (RandAugment, random erasing, EMA), two batches."""
    cfg = config("data=digits", "data.resolution=32", "recipe=gpunet", "recipe.epochs=1",
                 "recipe.batch_size=8", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2")
    result = fit_candidate(cfg, resolve_spec("gpunet_0"), tmp_path)
    assert result.status == "completed" and result.epochs == 1
    module = CandidateModule.load_from_checkpoint(result.checkpoint).eval()
    assert module.ema is not None and module.eval_model is module.ema.module
    hub = timm.create_model("gpunet_0", num_classes=10, checkpoint_path=result.checkpoint).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(hub(x), module(x))  # timm loads the validated (EMA) weights
    best = timm.create_model("gpunet_0", num_classes=10, checkpoint_path=result.best_weights).eval()
    torch.testing.assert_close(best(x), module(x))  # one epoch: the best is the last
    assert result.best_weights.stat().st_size < result.checkpoint.stat().st_size / 2  # weights only


def test_a_diverging_run_fails_with_a_clear_status(tmp_path, config) -> None:
    result = fit_candidate(config("recipe.epochs=2", "recipe.lr=1e30", "recipe.warmup_epochs=0"), TINY,
                           tmp_path)
    assert result.status == "failed" and "loss is nan" in result.error and result.epochs == 0


def test_the_recipes_gradient_clipping_bounds_every_update(tmp_path, config) -> None:
    huge_lr = ["recipe.epochs=2", "recipe.lr=1e10", "recipe.warmup_epochs=0"]
    assert fit_candidate(config(*huge_lr), TINY, tmp_path / "free").status == "failed"
    # the same lr with each gradient value clipped to 1e-20: every update is tiny
    clipped = fit_candidate(config(*huge_lr, "recipe.clip_grad=1e-20", "recipe.clip_mode=value"), TINY,
                            tmp_path / "clipped")
    assert clipped.status == "completed" and clipped.epochs == 2


def test_out_of_memory_fails_with_a_clear_status(tmp_path, monkeypatch, config) -> None:
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(CandidateModule, "training_step", oom)
    result = fit_candidate(config("recipe.epochs=1"), TINY, tmp_path)
    assert result.status == "failed" and result.error.startswith("OutOfMemoryError")


def test_other_errors_are_raised(tmp_path, monkeypatch, config) -> None:
    def bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(CandidateModule, "training_step", bug)
    with pytest.raises(RuntimeError, match="shapes"):
        fit_candidate(config("recipe.epochs=1"), TINY, tmp_path)


def test_an_unpromising_candidate_is_pruned_and_stays_pruned(tmp_path, config) -> None:
    thresholds = tmp_path / "median_stop.json"  # what a search hands its trials' jobs
    MedianThresholds.from_curves([[0.99] * 4] * 3).write(thresholds)
    stop = [f"early_stop.thresholds={thresholds}", "early_stop.grace_epochs=1",
            "early_stop.min_completed=3"]
    result = fit_candidate(config("recipe.epochs=4", *stop), TINY, tmp_path / "trial")
    assert result.status == "pruned" and result.epochs == 2 and len(result.curve) == 2
    again = fit_candidate(config("recipe.epochs=4", *stop), TINY, tmp_path / "trial")
    assert again.status == "pruned" and again.curve == result.curve


def test_wandb_offline_run_is_finished_and_resumed_under_one_id(tmp_path, monkeypatch, config) -> None:
    import wandb

    from gpunet.train.loggers import run_id

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no API key
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    calls = []
    real_init = wandb.init

    def init_spy(**kwargs):
        calls.append(kwargs)
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init_spy)
    out = tmp_path / "sweep" / "7"
    for epochs in (1, 2):
        result = fit_candidate(config("logger=wandb", f"recipe.epochs={epochs}"), TINY, out)
        assert result.status == "completed" and wandb.run is None
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(run_id(out)) for r in runs)
    assert [(c["id"], c["group"], c["mode"]) for c in calls] == [(run_id(out), "sweep", "offline")] * 2
    assert type(calls[0]["config"]) is dict and calls[1]["config"]["recipe"]["epochs"] == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_training_on_a_gpu(tmp_path, config) -> None:
    result = fit_candidate(config("device=h100", "recipe.epochs=2"), TINY, tmp_path)
    assert result.status == "completed" and result.epochs == 2
    assert "MixedPrecision" in torch.load(tmp_path / "last.ckpt", weights_only=False)  # the grad scaler


def test_a_timm_baseline_trains_with_the_candidates_recipe_and_reloads(tmp_path, config) -> None:
    """Table-3 baselines (timm's hand-designed networks) go through the same fit as a candidate:
    the proxy's resolution scale, its BatchNorm momentum, and a checkpoint that names the network."""
    network = TimmNetwork("mobilenetv3_small_050", 32)
    cfg = config("recipe.epochs=1", "recipe.train_batches_per_epoch=2")
    result = fit_candidate(cfg, network, tmp_path)
    assert result.status == "completed" and result.epochs == 1 and 0 <= result.best_top1 <= 1
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["spec"] == {"timm_model": "mobilenetv3_small_050", "resolution": 32}
    again = CandidateModule(ckpt["hyper_parameters"]["spec"], 10, ckpt["hyper_parameters"]["recipe"])
    again.load_state_dict(ckpt["state_dict"])
    assert type(again.model).__name__ == "MobileNetV3" and again.model.num_classes == 10
    momenta = {m.momentum for m in again.model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {cfg.recipe.bn_momentum} != {0.1}
    assert ckpt["global_step"] == 2


def test_an_unknown_timm_model_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="no model 'mobilenetv9'"):
        TimmNetwork("mobilenetv9", 32)
