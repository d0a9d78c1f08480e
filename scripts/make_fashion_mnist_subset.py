"""Regenerate gpunet/datasets/fashion_mnist_subset.npz from Fashion-MNIST's original IDX files.

Per class, `--train` images drawn without replacement from train-*-ubyte and `--val` from
t10k-*-ubyte with numpy's default_rng(`--seed`), one class after the other (classes 0..9). The
file keeps the drawn images in draw order, their labels and their indices in the original files
(train_index, val_index), so taking the first N of each class is itself a random subset.

    apt-get install dataset-fashion-mnist   # Debian's copy of the original files
    python scripts/make_fashion_mnist_subset.py /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from gpunet.datasets.fashion_mnist import CLASSES, FILES, SUBSET, idx_folder, read_split
from gpunet.files import atomic_path


def draw(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` indices of each class, drawn without replacement, class by class."""
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                           for c in range(len(CLASSES))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder with the four IDX files (or torchvision's root)")
    parser.add_argument("--train", type=int, default=600, help="training images per class")
    parser.add_argument("--val", type=int, default=200, help="validation images per class (from t10k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=SUBSET)
    args = parser.parse_args()

    folder = idx_folder(args.root)
    rng = np.random.default_rng(args.seed)
    arrays = {}
    for split, n in (("train", args.train), ("val", args.val)):
        images, labels = read_split(folder, split)
        index = draw(labels, n, rng)
        arrays.update({f"{split}_images": images[index], f"{split}_labels": labels[index],
                       f"{split}_index": index.astype(np.int32)})
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {args.train} train + {args.val} "
          f"val images per class, seed {args.seed}")
    for split in FILES.values():
        for name in split:
            path = next(p for p in (folder / (name + ".gz"), folder / name) if p.is_file())
            print(f"  {path.name}  sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
