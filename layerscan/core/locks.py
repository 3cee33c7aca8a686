"""One writer per output: a file lock (the `filelock` package, as transformers and the hub use)
beside a folder that a long run writes, so a second run waits or is refused, never both write."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from layerscan.core.errors import LayerscanError


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of `target`: hidden, beside it (`.NAME.layerscan-lock`)."""
    target = Path(target).expanduser().absolute()
    return target.parent / f".{target.name}.layerscan-lock"


@contextlib.contextmanager
def exclusive(target: str | os.PathLike, what: str, wait: bool) -> Iterator[None]:
    """Hold the lock of `target` for the block.

    Args:
        target: the folder the block writes.
        what: how messages name it, e.g. "--output run".
        wait: wait for another holder to finish (saying so on stderr), or refuse at once with
            a one-line LayerscanError.
    """
    from filelock import FileLock, Timeout

    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise LayerscanError(
                f"{what}: another layerscan run is writing it now (lock {path}); wait for "
                f"it to finish or choose another place"
            ) from None
        print(
            f"layerscan: waiting for another layerscan process writing {target} ...",
            file=sys.stderr,
            flush=True,
        )
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
