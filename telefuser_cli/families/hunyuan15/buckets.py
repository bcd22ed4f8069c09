"""The official HunyuanVideo 1.5 size buckets, shared by image-to-video sizing and super-resolution.

A resolution names a bucket base (480p: 640, 720p: 960, 1080p: 1440); its buckets are the sizes of about
``base**2`` pixels in whole 16-pixel patches, aspect ratio up to 4 (official ``generate_crop_size_list``).
"""

from __future__ import annotations

SIZE_MAP = {"480p": 640, "720p": 960, "1080p": 1440}  # official bucket base sizes per resolution


def crop_size_list(base_size: int, patch_size: int = 16, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """Official ``generate_crop_size_list``: (width, height) buckets of about base_size**2 pixels."""
    num_patches = round((base_size / patch_size) ** 2)
    sizes, wp, hp = [], num_patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            sizes.append((wp * patch_size, hp * patch_size))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return sizes
