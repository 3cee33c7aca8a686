"""The autoencoder's derived per-layer bases, cached as safetensors so loading skips the eighs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from layerscan.autoencoder import model as model_module
from layerscan.core.errors import LayerscanError

FOLDER = "autoencoder-bases"
"""Subfolder of the layerscan cache dir ($LAYERSCAN_CACHE) that holds the cached bases."""
KEY = "layerscan-basis-key"
"""safetensors metadata entry holding the full key, checked on every read."""


def basis_key(config_file: Path, weights_file: Path) -> str:
    """sha256 of everything the bases derive from: the artifact's two files, the code of
    `autoencoder/model.py` (which derives them) and the torch version (whose eigh does)."""
    digest = hashlib.sha256()
    for part in (
        config_file.read_bytes(),
        weights_file.read_bytes(),
        Path(model_module.__file__).read_bytes(),
        torch.__version__.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def basis_path(key: str, root: Path | None = None) -> Path:
    """Where the bases of `key` are cached (root: the layerscan cache dir)."""
    if root is None:
        from layerscan.autoencoder.capture.loading import cache_dir

        root = cache_dir()
    return root / FOLDER / f"{key[:32]}.safetensors"


def read_basis(path: Path, key: str, like: torch.Tensor) -> torch.Tensor | None:
    """The cached basis at `path`, or None when it is missing, corrupt, of another key, or not
    of the shape and dtype of `like` (a corrupt file is then rewritten by `write_basis`)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            if (fh.metadata() or {}).get(KEY) != key:
                return None
            basis = fh.get_tensor("basis")
    except (OSError, SafetensorError, ValueError, KeyError, RuntimeError):
        return None
    if basis.shape != like.shape or basis.dtype != like.dtype or not torch.isfinite(basis).all():
        return None
    return basis


def write_basis(path: Path, key: str, basis: torch.Tensor) -> bool:
    """Cache `basis` at `path` atomically (temp + rename); False when the cache is not writable
    (the next load then derives the bases again)."""
    from safetensors.torch import save_file

    from layerscan.core.outputs import atomic_path

    try:
        with atomic_path(path, kind="autoencoder bases") as tmp:
            save_file({"basis": basis.detach().cpu().contiguous()}, str(tmp), metadata={KEY: key})
    except (OSError, LayerscanError):
        return False
    return True
