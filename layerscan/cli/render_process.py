"""A movie drawn by a process forked at start-up, warm by the time its scan is ready.

`layerscan render PROMPT` spends its first seconds importing torch and transformers, loading
the model and scanning; the drawing side (PyVista's plotting, VTK's rendering modules,
matplotlib: 0.5-0.9 s) needs none of that. `RenderProcess` forks before torch is imported; the
child imports the drawing side while this process loads and scans, then renders the scan it is
handed (a file in a private temporary folder, the movie's options as JSON) with
`render_movie`, exactly as this process would, and answers with one line of JSON: the
render's figures, its error as the one line this process would print, or the signal that
stopped it. On a busy machine the child only competes with the model's loading, so it is
forked only when a core is to spare (as the second drawing process is:
`parallel.spare_core`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from layerscan.core.errors import LayerscanError, Terminated

PR_SET_PDEATHSIG = 1
"""prctl(2): the signal a process gets when its parent dies."""


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.close(fd)


class RenderProcess:
    """The forked movie process; create it before anything heavy is imported here.

    Args:
        scene_options: the drawing options of its render (SceneOptions).
        debug: print a failure's traceback (--debug) in the child.
    """

    def __init__(self, scene_options, debug: bool = False) -> None:
        self.scene_options = scene_options
        job_read, self._job = os.pipe()
        self._reply, reply_write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        self.pid: int | None = os.fork()
        if self.pid == 0:  # the child: never returns
            os.close(self._job)
            os.close(self._reply)
            _child(job_read, reply_write, scene_options, debug, parent)
        os.close(job_read)
        os.close(reply_write)
        self._folder: Path | None = None
        self._drawing = False

    def render_movie(self, source, path, scene_options, options, overwrite: bool = False):
        """`render.render_movie` of `source` to `path`, drawn by the child (once; `scene_options`
        must be those it was forked with)."""
        from layerscan.geometry.scene.render import RenderStats

        if scene_options != self.scene_options or self._job is None:
            raise ValueError("a RenderProcess renders once, with the scene options it was given")
        self._folder = Path(tempfile.mkdtemp(prefix="layerscan-render-"))
        job = {
            "scan": os.fspath(source.save(self._folder / "source.scan")),
            "output": os.fspath(path),
            "overwrite": overwrite,
            "options": dataclasses.asdict(options),  # RenderOptions: numbers, text, flags
        }
        _write_all(self._job, json.dumps(job).encode())
        self._job = None
        self._drawing = True
        reply = json.loads(_read_all(self._reply) or b'{"error": "the drawing process died"}')
        self._reply = None
        self.close()
        if "signal" in reply:
            raise Terminated() if reply["signal"] == "term" else KeyboardInterrupt()
        if "error" in reply:
            raise LayerscanError(reply["error"])
        stats = reply["stats"]
        return RenderStats(Path(stats[0]), *stats[1:])

    def close(self) -> None:
        """Stop the child (closing its job pipe, or SIGTERM while it draws) and wait for it;
        remove the scan handed to it."""
        if self._job is not None:  # it still waits for a job: there is none
            os.close(self._job)
            self._job = None
        if self.pid is not None:
            if self._drawing and self._reply is not None:  # stop it (Ctrl-C reached it too)
                try:
                    os.kill(self.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            while True:
                try:
                    os.waitpid(self.pid, 0)
                    break
                except ChildProcessError:
                    break
                except KeyboardInterrupt:  # a second Ctrl-C: keep waiting for its cleanup
                    continue
            self.pid = None
        if self._reply is not None:
            os.close(self._reply)
            self._reply = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _end_with_the_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when its parent (pid `parent`) dies (Linux),
    so a parent killed with SIGKILL leaves no movie drawing on: the child removes its partial
    file and stops its encoder."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent's own cleanup only
        return
    if os.getppid() != parent:  # it died before the request
        os.kill(os.getpid(), signal.SIGTERM)


def _child(job_fd: int, reply_fd: int, scene_options, debug: bool, parent: int) -> None:
    """Warm up, wait for the job, render it, answer; always ends the process."""
    reply: dict = {}
    try:
        _end_with_the_parent(parent)
        from layerscan.geometry.scene.render import warm_up

        warm_up()
        data = _read_all(job_fd)
        if not data:  # the parent stopped before its scan was ready
            os._exit(0)
        job = json.loads(data)
        from layerscan.geometry.diff_scan import load_any
        from layerscan.geometry.scene.render import RenderOptions, render_movie

        scan = load_any(job["scan"])
        shutil.rmtree(Path(job["scan"]).parent, ignore_errors=True)  # even if the parent dies
        stats = render_movie(
            scan,
            job["output"],
            scene_options,
            RenderOptions(**job["options"]),
            overwrite=job["overwrite"],
        )
        reply = {"stats": [os.fspath(stats.path), *stats[1:]]}
    except KeyboardInterrupt as exc:
        reply = {"signal": "term" if isinstance(exc, Terminated) else "int"}
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the parent's one line
        from layerscan.cli.main import disk_full_line

        if debug:
            traceback.print_exc()
        reply = {
            "error": str(exc)
            if isinstance(exc, LayerscanError)
            else disk_full_line(exc)
            or f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
        }
    finally:
        try:
            _write_all(reply_fd, json.dumps(reply).encode())
        finally:
            os._exit(0)
