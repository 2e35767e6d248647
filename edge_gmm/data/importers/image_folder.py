"""Folder-per-class images (png, jpg, bmp, gif, ...): one session per image, modality `camera` holding one
frame at t = 0 on a nominal 1 Hz clock; the recommended window is 1 s, so each image is one window.
Images are converted to RGB in [0, 1] and resized (bilinear) to --image-size HxW, default the first image's
size. Reading needs Pillow (a matplotlib dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_gmm.config import SensorSpec, TaskSpec, WindowSpec
from edge_gmm.data.format import Session, Stream
from edge_gmm.data.importers.common import Parsed, class_folders, parse_size, session_id
from edge_gmm.errors import DataError, MissingDependencyError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read_image(path: Path, size: tuple[int, int] | None):
    """(H, W, 3) float32 in [0, 1], resized to size=(H, W) when given."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise MissingDependencyError("image-folder import needs Pillow", hint="pip install pillow") from None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{path}: cannot decode image: {e}") from None


def load(src: Path, test: Path | None, opts) -> Parsed:
    items = [(c, f, None) for c, f in class_folders(src, SUFFIXES)]
    if test:
        items += [(c, f, "test") for c, f in class_folders(test, SUFFIXES)]
    size = parse_size(opts.image_size) if opts.image_size else None
    name = opts.modality or "camera"
    sessions = []
    for i, (c, f, split) in enumerate(items):
        img = read_image(f, size)
        size = size or img.shape[:2]
        sessions.append((Session(session_id(split or "train", i), {name: Stream(np.zeros(1), img[None])}, {"class": c}, [], {"file": str(f.relative_to(f.parents[1]))}), split))
    labels = sorted({c for c, *_ in items})
    if len(labels) < 2:
        raise DataError(f"{src}: found one class folder ({labels[0]}); a classifier needs at least two")
    sensor = SensorSpec(name, "camera", 1.0, 3, [], height=int(size[0]), width=int(size[1]))
    meta = {"source": str(src), "test_source": str(test) if test else None, "format": "image-folder"}
    return Parsed(opts.name or src.name, [sensor], [TaskSpec("class", "classification", labels)], WindowSpec(1.0, 1.0), sessions, meta)
