"""The images ``predict`` reads from ``data.predict_root``: a folder in any layout, without labels.

Loaded only by a ``predict`` run that names such a folder.
"""

from __future__ import annotations

from pathlib import Path

from project.data.check import FileCheck, check_files
from project.data.files import ImageFiles
from project.exceptions import InputFileError
from project.images import scan_folder


def folder_to_predict(
    root: Path, channels: int, check: bool, num_workers: int
) -> tuple[ImageFiles, FileCheck | None, list[tuple[str, str]]]:
    """The images under ``root`` (any layout, no labels), checked when ``check`` is on."""
    if not root.is_dir():
        raise InputFileError(f"predict_root {str(root)!r} is not a folder of images")
    paths, _ = scan_folder(root)
    if not paths:
        raise InputFileError(
            f"predict_root {str(root)!r} holds no image files "
            "(looked for .png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp)"
        )
    if not check:
        return ImageFiles(paths, channels), None, []
    checked = check_files(paths, channels, num_workers=num_workers)
    return ImageFiles([paths[i] for i in checked.readable], channels), checked, checked.unreadable
