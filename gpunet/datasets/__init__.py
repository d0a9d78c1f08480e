"""Image data shipped inside the package (so a fresh install trains on real images, no download),
and the readers of their original file formats."""
