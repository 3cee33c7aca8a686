"""Safe output paths: checked up front, written under a temporary name, renamed when complete."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from layerscan import __version__
from layerscan.core.errors import LayerscanError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""Errors of a write that found no room: reported as one line naming the output."""
MANIFEST = ".layerscan-output.json"
"""Marks a folder that layerscan wrote, with the entries it wrote; only such a folder is ever
replaced, and only with --overwrite."""


NAME_MAX = 255
"""Longest file name, in bytes, that Linux and macOS file systems take."""
_PARTIAL_EXTRA = 48
"""Bytes a temporary name adds to the stem: `.`, `.PID.HEX.partial` and the suffix (capped)."""


def _short(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (never inside a character)."""
    return text.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


def _partial_parts(final: Path, suffix: str) -> tuple[str, str]:
    """The stem and suffix a temporary name of `final` uses: together they leave room for the
    process id and random part, so a temporary name fits NAME_MAX whenever `final` does."""
    suffix = _short(suffix, 16)
    return _short(final.stem, NAME_MAX - _PARTIAL_EXTRA - len(suffix.encode())), suffix


def _partial_pattern(final: Path, suffix: str) -> re.Pattern:
    """`.NAME.PID.HEX.partialSUFFIX` (and `...partial-old`) of `final`, PID as group 1."""
    stem, suffix = _partial_parts(final, suffix)
    return re.compile(
        rf"\.{re.escape(stem)}\.(\d+)\.[0-9a-f]{{8}}\.partial(?:{re.escape(suffix)}|-old)"
    )


def _partial_name(final: Path, suffix: str, old: bool = False) -> Path:
    stem, suffix = _partial_parts(final, suffix)
    tail = "-old" if old else suffix
    return final.parent / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.partial{tail}"


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_partials(final: str | os.PathLike, suffix: str | None = None) -> list[Path]:
    """Delete partial outputs of `final` left by runs that died (their process id is gone).

    Only names of the exact form `.NAME.PID.HEX.partialSUFFIX` whose PID no longer exists are
    touched; a partial of a live run, or anything else, is left alone. A replaced output
    folder (`...partial-old`) whose run died before the new one landed is put back instead.
    """
    final = Path(final).expanduser()
    suffix = final.suffix if suffix is None else suffix
    pattern = _partial_pattern(final, suffix)
    removed = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and int(match[1]) != os.getpid() and not _alive(int(match[1])):
            if entry.name.endswith("-old") and not final.exists() and not final.is_symlink():
                os.replace(entry, final)  # the run died between its two renames
                continue
            _remove(entry)
            removed.append(entry)
    return removed


def _is_same_or_inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output(
    path: str | os.PathLike,
    folder: bool = False,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    flag: str = "-o",
) -> Path:
    """Refuse, with one line, an output that would delete or replace what layerscan didn't make.

    Cheap: commands call it before loading any model. An existing file may be replaced; an
    existing non-empty folder only if it is a layerscan output folder (its manifest lists
    everything in it) and `overwrite` is set.

    Args:
        path: the output path as the user gave it.
        folder: whether the output is a folder (PNG frames, meshes, an autoencoder).
        overwrite: allow replacing an earlier layerscan output folder.
        inputs: input files of this run; the output may not be or hold one of them.
        flag: the option that named the output, for messages.
    """
    final = _check_place(path, folder, inputs, flag)
    if final.is_dir():
        _check_existing_folder(final, path, folder, overwrite, flag)
    elif (final.exists() or final.is_symlink()) and folder:
        raise LayerscanError(
            f"{flag} {path}: is a file, and this output is a folder; name a new folder"
        )
    return final


def _check_place(
    path: str | os.PathLike,
    folder: bool,
    inputs: Iterable[str | os.PathLike] = (),
    flag: str = "-o",
) -> Path:
    """Refuse the root, home and current folders, a folder holding an input, a parent that is
    a file, and a place where nothing can be written. Returns the expanded path."""
    final = Path(path).expanduser()
    try:
        resolved = final.resolve()
        check_kind(final, folder, flag, path)
    except (OSError, RuntimeError) as exc:  # a symbolic link loop, an unreadable parent
        reason = getattr(exc, "strerror", None) or "a symbolic link loop"
        raise LayerscanError(
            f"{flag} {path}: cannot be reached ({reason}); choose another output path"
        ) from None
    cwd = Path.cwd().resolve()
    guarded = {
        Path(resolved.anchor): "the filesystem root",
        Path.home().resolve(): "your home folder",
        cwd: "the current folder",
    }
    if resolved in guarded or _is_same_or_inside(cwd, resolved):
        what = guarded.get(resolved, "a folder that holds the current folder")
        raise LayerscanError(
            f"{flag} {path}: is {what}; layerscan never writes over it, name "
            f"a new {'folder' if folder else 'file'} instead"
        )
    for item in inputs:
        source = Path(item).expanduser()
        if (
            source.exists()
            and _is_same_or_inside(source.resolve(), resolved)
            and (folder or resolved.is_dir())
        ):
            raise LayerscanError(
                f"{flag} {path}: holds the input {item}; write the output somewhere else"
            )
    ancestor = final.parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LayerscanError(
            f"{flag} {path}: {ancestor} is a file, not a folder; choose another output path"
        )
    _probe_writable(ancestor, path, flag)
    return final


_SPECIAL = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe (fifo)",
    stat.S_IFSOCK: "a socket",
}


def check_kind(final: Path, folder: bool, flag: str = "-o", path=None) -> None:
    """Refuse an existing output that is no regular file or folder (a device, a pipe, a
    socket, or a link to one): layerscan replaces only files and folders, never e.g. /dev/null."""
    try:
        mode = final.stat().st_mode  # follows links: a link to /dev/null is refused too
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there yet, or a parent that is a file (_check_place says so)
    kind = _SPECIAL.get(stat.S_IFMT(mode))
    if kind is not None:
        raise LayerscanError(
            f"{flag} {path if path is not None else final}: is {kind}; layerscan writes only "
            f"regular {'folders' if folder else 'files'}, name one instead"
        )


def check_run_folder(
    path: str | os.PathLike, resume: bool = False, overwrite: bool = False
) -> Path:
    """Check a folder that training will write into (see `mark_run_folder`).

    A new or empty folder is fine. A non-empty one must be a layerscan run folder, and then
    needs `resume` (continue it) or `overwrite` (train again into it); `resume` also accepts a
    folder with a checkpoint but no manifest (runs of older layerscan versions).
    """
    flag = "--output"
    folder = _check_place(path, folder=True, flag=flag)
    if folder.exists() and not folder.is_dir():
        raise LayerscanError(f"--output {path}: is a file; training needs a folder")
    if folder.is_dir() and any(folder.iterdir()) and not resume:
        if _manifest_entries(folder) is None:
            raise LayerscanError(
                f"--output {path}: folder exists and is not empty, and it is "
                f"not a layerscan training run; name a new or empty folder"
            )
        if not overwrite:
            raise LayerscanError(
                f"--output {path}: holds an earlier training run; pass "
                f"--resume to continue it or --overwrite to train again "
                f"into it"
            )
    return folder


def mark_run_folder(path: str | os.PathLike) -> Path:
    """Create `path` if needed and mark it as a layerscan training run."""
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MANIFEST).is_file():
        (folder / MANIFEST).write_text(
            json.dumps({"layerscan_version": __version__, "kind": "training-run", "entries": []}),
            encoding="utf-8",
        )
    return folder


def _check_existing_folder(final: Path, path, folder: bool, overwrite: bool, flag: str) -> None:
    if not folder:
        raise LayerscanError(
            f"{flag} {path}: is a folder, and this output is a file; name a file "
            f"(layerscan never replaces a folder with a file)"
        )
    if final.is_symlink():
        raise LayerscanError(f"{flag} {path}: is a link to a folder; name a new folder")
    if not any(final.iterdir()):
        return
    written = _manifest_entries(final)
    if written is None:
        raise LayerscanError(
            f"{flag} {path}: folder exists and is not empty, and layerscan did "
            f"not write it; name a new or empty folder (nothing was deleted)"
        )
    if not overwrite:
        raise LayerscanError(
            f"{flag} {path}: holds an earlier layerscan output; pass --overwrite "
            f"to replace it, or name a new folder"
        )
    present = {str(p.relative_to(final)) for p in final.rglob("*")}
    foreign = sorted(present - written - {MANIFEST})
    if foreign:
        raise LayerscanError(
            f"{flag} {path}: also holds {foreign[0]!r}, which layerscan did not "
            f"write; move it away or name a new folder (nothing was deleted)"
        )


def _manifest_entries(folder: Path) -> set[str] | None:
    """The entries a layerscan output folder's manifest lists, or None if it has none."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return {str(entry) for entry in manifest["entries"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _probe_writable(folder: Path, path, flag: str) -> None:
    """Create and remove a hidden folder in `folder`, so an unwritable place fails up front."""
    probe = folder / f".layerscan-probe.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise LayerscanError(
            f"{flag} {path}: cannot write in {folder} ({exc.strerror}); choose another output path"
        ) from None


def write_manifest(folder: Path, kind: str) -> None:
    """Mark `folder` as a layerscan output, listing every entry now in it."""
    entries = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    (folder / MANIFEST).write_text(
        json.dumps({"layerscan_version": __version__, "kind": kind, "entries": entries}, indent=1),
        encoding="utf-8",
    )


@contextlib.contextmanager
def atomic_path(
    final: str | os.PathLike,
    suffix: str | None = None,
    folder: bool = False,
    overwrite: bool = False,
    kind: str = "output",
) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    The caller creates the temporary path (a file, or a folder when `folder`). An exception,
    SIGTERM or Ctrl-C removes it; a kill leaves it under a name holding this process id, which
    the next run for the same output removes. Nothing is replaced that `check_output` refuses;
    a folder output gets a manifest that marks it as layerscan's.

    Args:
        final: the output path.
        suffix: suffix of the temporary name (default: `final`'s).
        folder: the output is a folder.
        overwrite: replace an earlier layerscan output folder.
        kind: what the folder holds, recorded in its manifest.
    """
    final = check_output(final, folder=folder, overwrite=overwrite)
    suffix = final.suffix if suffix is None else suffix
    remove_stale_partials(final, suffix)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(final, suffix)
    try:
        yield tmp
        check_output(final, folder=folder, overwrite=overwrite)  # again: the run took a while
        if folder:
            if not tmp.is_dir():
                raise LayerscanError(f"{final}: the output folder was not written")
            write_manifest(tmp, kind)
            _replace_folder(tmp, final)
        else:
            if tmp.is_file() and not tmp.is_symlink():
                os.chmod(tmp, 0o666 & ~_umask())  # writers such as safetensors make 0600
            os.replace(tmp, final)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise LayerscanError(
            f"{final}: the disk is full ({exc.strerror}); nothing was written, free some "
            f"space or write elsewhere and rerun"
        ) from exc
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def _umask() -> int:
    """The process umask (read without changing it where Linux allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _replace_folder(tmp: Path, final: Path) -> None:
    """Rename `tmp` onto `final`; an existing `final` (checked: empty, or ours) goes last."""
    if final.is_dir() and any(final.iterdir()):
        old = _partial_name(final, "", old=True)
        os.replace(final, old)
        try:
            os.replace(tmp, final)
        except OSError:
            os.replace(old, final)
            raise
        _remove(old)
    else:
        os.replace(tmp, final)  # onto nothing, or onto an empty folder
