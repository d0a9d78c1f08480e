"""Fashion-MNIST (Zalando, MIT licence): 28x28 grey photos of clothes in 10 classes.

Harder than scikit-learn's digits, so candidates of one latency tier differ by more than their
training luck. Two sources:
  * the class-balanced subset shipped in the package (`SUBSET`: 600 train + 200 val images per
    class, from the original train and t10k files; see fashion_mnist_subset.md), the default;
  * the full set (60,000 train, 10,000 t10k as validation) read from a local folder holding the
    four original IDX files, gzipped or not: either the folder itself or torchvision's layout
    `<root>/FashionMNIST/raw/`.
Images are kept in memory as one uint8 tensor; an item is turned into a [0, 1] float RGB tensor
and goes through the recipe's timm transforms (which take tensors as they take PIL images), so
there is no per-image PIL work.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from gpunet.errors import ConfigError, NotFoundError

SUBSET = Path(__file__).with_name("fashion_mnist_subset.npz")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")
# the original file names; the train pair is the training set, the t10k pair the validation set
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one these files use

Arrays = tuple[np.ndarray, np.ndarray]


def read_idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `dims` dimensions (3: images, 1: labels), gzipped or
    not (by the .gz suffix), checked against its header so a wrong or cut file names itself."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"Fashion-MNIST file {path} does not exist")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise NotFoundError(f"Fashion-MNIST file {path} is not a readable gzip file ({err}); "
                            "download it again") from err
    header = 4 + 4 * dims
    if len(raw) < header or raw[:2] != b"\0\0" or raw[2] != IDX_UBYTE or raw[3] != dims:
        raise NotFoundError(f"Fashion-MNIST file {path} is not an IDX file of {dims}-d unsigned "
                            f"bytes (magic {raw[:4].hex() or 'missing'}, expected "
                            f"0000{IDX_UBYTE:02x}{dims:02x}); is it the right file?")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise NotFoundError(f"Fashion-MNIST file {path} holds {len(raw) - header} bytes of data, its "
                            f"header says {size} (shape {shape}): the file is truncated or corrupt")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def idx_folder(root: Path) -> Path:
    """The folder holding the IDX files: `root` itself or torchvision's `root/FashionMNIST/raw`."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        if any((folder / (FILES["train"][0] + gz)).is_file() for gz in ("", ".gz")):
            return folder
    raise NotFoundError(f"data.root={root}: no Fashion-MNIST IDX files there or in "
                        f"{root / 'FashionMNIST' / 'raw'} (expected {FILES['train'][0]}[.gz] and the "
                        "other three original files)")


def read_split(folder: Path, split: str) -> Arrays:
    """One split's images (N, 28, 28) and labels (N,) from `folder`, each file gzipped or not."""
    images, labels = (read_idx(_existing(folder / name), dims)
                      for name, dims in zip(FILES[split], (3, 1)))
    if len(images) != len(labels):
        raise NotFoundError(f"Fashion-MNIST {split} files in {folder} disagree: {len(images)} images, "
                            f"{len(labels)} labels")
    if labels.size and labels.max() >= len(CLASSES):
        raise NotFoundError(f"Fashion-MNIST {split} labels in {folder} go up to {labels.max()}; "
                            f"expected 0..{len(CLASSES) - 1}: is it the right file?")
    return images, labels


def _existing(stem: Path) -> Path:
    """`stem.gz` when it exists, else `stem` (read_idx names it if that is missing too)."""
    gz = stem.with_name(stem.name + ".gz")
    return gz if gz.is_file() and not stem.is_file() else stem


def read_subset(path: Path = SUBSET) -> tuple[Arrays, Arrays]:
    """The shipped subset's (train, val) arrays."""
    if not path.is_file():
        raise NotFoundError(f"the shipped Fashion-MNIST subset {path} is missing: reinstall gpunet, "
                            "or set data.root to a folder with the original IDX files")
    try:
        with np.load(path) as z:
            return (z["train_images"], z["train_labels"]), (z["val_images"], z["val_labels"])
    except (OSError, ValueError, KeyError) as err:
        raise NotFoundError(f"the shipped Fashion-MNIST subset {path} is corrupt ({err}): reinstall "
                            "gpunet") from err


def first_per_class(images: np.ndarray, labels: np.ndarray, n: int | None) -> Arrays:
    """The first `n` images of each class in file order (the files are shuffled, so this is a
    random class-balanced subset); None: all."""
    if n is None:
        return images, labels
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(len(CLASSES))]))
    return images[keep], labels[keep]


class InMemoryImages(Dataset):
    """Grey uint8 images held in one tensor, given to timm's transforms as [0, 1] RGB tensors."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images = torch.from_numpy(np.array(images))  # a writable copy (IDX bytes are read-only)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i].float().div_(255).expand(3, -1, -1)
        return self.transform(image), int(self.labels[i])


def fashion_mnist_arrays(data: DictConfig) -> tuple[Arrays, Arrays]:
    """(train, val) arrays from `data.root` (null: the shipped subset), cut to the per-class
    sizes of `data.train_per_class` / `data.val_per_class` (null: all)."""
    if data.root is None:
        train, val = read_subset()
    else:
        root = Path(data.root).expanduser()
        folder = idx_folder(root)
        train, val = read_split(folder, "train"), read_split(folder, "val")
    out = []
    for (images, labels), key in zip((train, val), ("train_per_class", "val_per_class")):
        n = data.get(key)
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ConfigError(f"data.{key}={n!r}: give a whole number >= 1, or null for all images")
        images, labels = first_per_class(images, labels, n)
        if n is not None and len(labels) < n * len(CLASSES):
            have = np.bincount(labels, minlength=len(CLASSES)).min()
            raise ConfigError(f"data.{key}={n}: the source has only {have} images of some class; "
                              f"use at most {have} (or data.root=<full set>)")
        out.append((images, labels))
    return out[0], out[1]


def fashion_mnist_datasets(data: DictConfig, recipe: DictConfig, resolution: int,
                           ) -> tuple[Dataset, Dataset, int]:
    """The data group's builder for data=fashion_mnist (see the module docstring)."""
    # imported here: gpunet.train's package imports the data group, which imports this module
    from gpunet.train.recipe import build_transforms

    (x_train, y_train), (x_val, y_val) = fashion_mnist_arrays(data)
    train_tf, val_tf = build_transforms(recipe, resolution, data.hflip)
    return InMemoryImages(x_train, y_train, train_tf), InMemoryImages(x_val, y_val, val_tf), len(CLASSES)
