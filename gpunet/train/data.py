"""The data group (conf/data/*.yaml): ImageFolder trees, scikit-learn's bundled digits, fake data.

Datasets are built at once (not in `setup`) so a bad data root fails before any training starts
and the number of classes is known when the model is built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from gpunet.datasets.fashion_mnist import fashion_mnist_datasets
from gpunet.errors import ConfigError, NotFoundError
from gpunet.train.recipe import build_transforms


class ImageDataModule(L.LightningDataModule):
    """Train/val loaders over two datasets; training drops the last partial batch (BatchNorm)."""

    def __init__(self, train: Dataset, val: Dataset, num_classes: int, batch_size: int,
                 num_workers: int, pin_memory: bool) -> None:
        super().__init__()
        self.train, self.val, self.num_classes = train, val, num_classes
        self.loader_kwargs = dict(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                                  persistent_workers=num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, shuffle=True, drop_last=True, **self.loader_kwargs)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, shuffle=False, **self.loader_kwargs)


class DigitsDataset(Dataset):
    """8x8 grey digits as RGB PIL images, so they go through the same timm transforms as photos."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple:
        image = Image.fromarray(self.images[i]).convert("RGB")
        return self.transform(image), int(self.labels[i])


Datasets = tuple[Dataset, Dataset, int]


def digits_datasets(data: DictConfig, recipe: DictConfig, resolution: int) -> Datasets:
    """scikit-learn's digits (1797 images, no download) with a split fixed by `data.split_seed`."""
    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    x_train, x_val, y_train, y_val = train_test_split(
        images, bunch.target, test_size=data.val_fraction, random_state=data.split_seed,
        stratify=bunch.target)
    train_tf, val_tf = build_transforms(recipe, resolution, data.hflip)
    return DigitsDataset(x_train, y_train, train_tf), DigitsDataset(x_val, y_val, val_tf), 10


def imagefolder_datasets(data: DictConfig, recipe: DictConfig, resolution: int) -> Datasets:
    """`data.root`/{train,val}/<class>/<image> trees, such as ImageNet."""
    if data.root is None:
        raise ConfigError("data=imagefolder needs data.root=<folder with train/ and val/ subfolders>")
    root = Path(data.root).expanduser()
    dirs = [root / data.train_split, root / data.val_split]
    for d in dirs:
        if not d.is_dir():
            raise NotFoundError(
                f"data.root={root}: no {d.name}/ folder at {d}; point data.root at a folder with "
                f"{data.train_split}/ and {data.val_split}/ ImageFolder trees")
    train_tf, val_tf = build_transforms(recipe, resolution, data.hflip)
    try:
        train, val = (ImageFolder(str(d), transform=tf) for d, tf in zip(dirs, (train_tf, val_tf)))
    except FileNotFoundError as err:
        raise NotFoundError(f"data.root={root} holds no images in class folders: {err}") from err
    if train.classes != val.classes:
        raise ConfigError(f"data.root={root}: the class folders of {dirs[0]} ({len(train.classes)}) "
                          f"and {dirs[1]} ({len(val.classes)}) differ; they must be the same")
    return train, val, len(train.classes)


class FakeImages(Dataset):
    """Random [0, 1) images and labels, fixed per index by a private generator. (torchvision's
    FakeData reseeds torch's global RNG per image, which costs a stack trace per CUDA-capable
    device type when CUDA is not initialised, and round-trips through PIL.)"""

    def __init__(self, size: int, shape: tuple[int, int, int], num_classes: int, offset: int) -> None:
        self.size, self.shape, self.num_classes, self.offset = size, shape, num_classes, offset

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(self.offset + i)
        label = int(torch.randint(self.num_classes, (), generator=generator))
        return torch.rand(self.shape, generator=generator), label


def fake_datasets(data: DictConfig, recipe: DictConfig, resolution: int) -> Datasets:
    """Random images for smoke tests and throughput; no augmentation."""
    shape = (3, resolution, resolution)
    train = FakeImages(data.train_size, shape, data.num_classes, offset=0)
    val = FakeImages(data.val_size, shape, data.num_classes, offset=data.train_size)
    return train, val, data.num_classes


BUILDERS: dict[str, Callable[[DictConfig, DictConfig, int], Datasets]] = {
    "digits": digits_datasets, "imagefolder": imagefolder_datasets, "fake": fake_datasets,
    "fashion_mnist": fashion_mnist_datasets}


def build_datamodule(data: DictConfig, recipe: DictConfig, resolution: int,
                     pin_memory: bool = False) -> ImageDataModule:
    """The data group's datasets at `resolution`, batched as the recipe says."""
    if data.name not in BUILDERS:
        raise ConfigError(f"data.name={data.name!r} is not one of {sorted(BUILDERS)}")
    train, val, num_classes = BUILDERS[data.name](data, recipe, resolution)
    return ImageDataModule(train, val, num_classes, recipe.batch_size, data.num_workers, pin_memory)
