"""Image files: the suffixes the package reads, and an image's size as detectors see it (EXIF applied)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "is_image", "image_paths", "image_size", "ImageReadError"]

# the suffixes Ultralytics' dataloaders take as images (its IMG_FORMATS), so a split resolves to the same files
IMAGE_SUFFIXES = (".avif", ".bmp", ".dng", ".heic", ".heif", ".jp2", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff",
                  ".webp")
_EXIF_ORIENTATION = 0x0112


class ImageReadError(ValueError):
    """An image file is missing or cannot be decoded."""


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_SUFFIXES` (any case)."""
    return os.fspath(path).rpartition(".")[-1].lower() in {s[1:] for s in IMAGE_SUFFIXES}


def image_paths(source: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The sorted image files of a folder (or the one image ``source`` names); ImageReadError when there are none."""
    src = Path(source).expanduser()
    if src.is_file():
        if not is_image(src):
            raise ImageReadError(f"{src} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        return [src]
    if not src.is_dir():
        raise ImageReadError(f"{src} does not exist; pass an image or a folder of images")
    found = sorted(p for p in (src.rglob("*") if recursive else src.iterdir()) if p.is_file() and is_image(p))
    if not found:
        raise ImageReadError(f"{src} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as decoders that honour EXIF orientation see the image (Ultralytics, OpenCV), from the header.

    A JPEG stored 4000 x 3000 with orientation 6 (rotate 90) is 3000 x 4000 here, as its labels are.
    """
    from PIL import Image

    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = None
            # JPEG/TIFF/WebP hold EXIF in the header; a PNG only when its eXIf chunk precedes the pixels (Pillow
            # would otherwise decode the whole image to look for one after them)
            if im.format in {"JPEG", "MPO", "TIFF", "WEBP"} or "exif" in im.info:
                try:
                    orientation = im.getexif().get(_EXIF_ORIENTATION)
                except Exception:  # a broken EXIF block: the pixels are still there
                    orientation = None
    except FileNotFoundError:
        raise ImageReadError(f"image {path!r} does not exist") from None
    except Exception as e:
        raise ImageReadError(f"image {path!r} cannot be read: {e}") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
