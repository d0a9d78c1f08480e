"""data=fashion_mnist: the shipped subset, a local IDX folder (plain or torchvision layout, gzipped
or not), clear errors for a missing or corrupt file, and a real Lightning fit on it."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from gpunet.datasets.fashion_mnist import FILES, SUBSET
from gpunet.errors import ConfigError, NotFoundError
from gpunet.paths import CONF_DIR
from gpunet.space.spec import HeadSpec, LayerSpec, NetworkSpec
from gpunet.train import fit_candidate
from gpunet.train.data import build_datamodule

TINY = NetworkSpec(32, (LayerSpec("conv", 3, 8, 2, 3, "swish"),
                        LayerSpec("irb", 8, 16, 2, 3, "relu", 2.0)),
                   HeadSpec(16, 32, 10), name="tiny")


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["arch=tiny", "data=fashion_mnist", "data.resolution=32",
                                           "recipe.batch_size=8", "trainer.enable_progress_bar=false",
                                           *overrides])


def datamodule(*overrides: str):
    cfg = config(*overrides)
    return build_datamodule(cfg.data, cfg.recipe, cfg.data.resolution)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: two zero bytes, type 0x08, the dimensions, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, gzipped: bool, n_train: int = 30, n_val: int = 20,
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four original files with random images and every class in turn as labels."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("val", n_val)):
        arrays = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10)
        for name, array in zip(FILES[split], arrays):
            data = idx_bytes(array)
            if gzipped:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        written[split] = arrays
    return written


def test_the_shipped_subset_is_class_balanced_and_loads_as_rgb_tensors() -> None:
    assert SUBSET.stat().st_size < 5e6  # a few MB inside the package
    dm = datamodule()
    assert dm.num_classes == 10 and (len(dm.train), len(dm.val)) == (6000, 2000)
    assert torch.bincount(dm.train.labels).tolist() == [600] * 10
    assert torch.bincount(dm.val.labels).tolist() == [200] * 10
    image, label = dm.val[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10
    mean, std = (torch.tensor(c).view(3, 1, 1) for c in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    grey = image * std + mean  # timm's ImageNet normalisation undone
    torch.testing.assert_close(grey[1:], grey[:1].expand(2, -1, -1))  # grey: the same in each channel
    small = datamodule("data.train_per_class=5", "data.val_per_class=2")
    assert torch.bincount(small.train.labels).tolist() == [5] * 10 and len(small.val) == 20
    with pytest.raises(ConfigError, match="data.train_per_class=601: the source has only 600"):
        datamodule("data.train_per_class=601")


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzipped"])
@pytest.mark.parametrize("layout", [".", "FashionMNIST/raw"], ids=["folder", "torchvision"])
def test_a_local_idx_folder_gives_the_full_set(tmp_path, gzipped, layout) -> None:
    written = write_idx_folder(tmp_path / layout, gzipped)
    dm = datamodule(f"data.root={tmp_path}")
    for dataset, (images, labels) in zip((dm.train, dm.val), (written["train"], written["val"])):
        assert torch.equal(dataset.images, torch.from_numpy(images))
        assert dataset.labels.tolist() == labels.tolist()
    assert datamodule(f"data.root={tmp_path}", "data.train_per_class=2").train.labels.tolist() == \
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 2  # the first two of each class, in file order


def test_a_folder_without_the_files_says_where_it_looked(tmp_path) -> None:
    with pytest.raises(NotFoundError, match=f"data.root={tmp_path}: no Fashion-MNIST IDX files"):
        datamodule(f"data.root={tmp_path}")


def test_a_missing_file_is_named(tmp_path) -> None:
    write_idx_folder(tmp_path, gzipped=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(NotFoundError, match="t10k-labels-idx1-ubyte does not exist"):
        datamodule(f"data.root={tmp_path}")


@pytest.mark.parametrize("corrupt, message", [
    (lambda data: b"\x08\x03" + data[2:], "is not an IDX file of 3-d unsigned bytes"),  # bad magic
    (lambda data: data[:-100], "header says 23520 .* truncated or corrupt"),            # cut short
    (lambda data: data[:3], "is not an IDX file"),                                      # no header
], ids=["magic", "truncated", "header"])
def test_a_corrupt_file_is_named(tmp_path, corrupt, message) -> None:
    write_idx_folder(tmp_path, gzipped=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(NotFoundError, match=f"{path}.*{message}"):
        datamodule(f"data.root={tmp_path}")


def test_a_broken_gzip_file_is_named(tmp_path) -> None:
    write_idx_folder(tmp_path, gzipped=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(NotFoundError, match=f"{path} is not a readable gzip file"):
        datamodule(f"data.root={tmp_path}")


@pytest.mark.usefixtures("one_torch_thread")
def test_a_real_fit_on_the_shipped_subset(tmp_path) -> None:
    cfg = config("recipe.epochs=2", "data.train_per_class=8", "data.val_per_class=4")
    result = fit_candidate(cfg, TINY, tmp_path)
    assert result.status == "completed" and result.epochs == 2 and result.num_classes == 10
    assert 0 <= result.best_top1 <= 1 and len(result.curve) == 2
