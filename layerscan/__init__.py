"""layerscan: a transformer's hidden states as a 3D particle cloud moving through layer-time.

The public API, imported lazily so that `import layerscan` loads no torch:

    import layerscan
    scan = layerscan.scan("The capital of France is")   # a layerscan.Scan
    layerscan.render(scan, "out.mp4")                   # or .gif, .png, a folder of frames
    diff = layerscan.diff("She did believe it", "She did not believe it")
    scan.save("x.scan"); layerscan.Scan.load("x.scan")
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("layerscan")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

_EXPORTS = {
    "scan": "layerscan.api",
    "diff": "layerscan.api",
    "render": "layerscan.api",
    "still": "layerscan.api",
    "pipeline": "layerscan.api",
    "Pipeline": "layerscan.geometry.pipeline",
    "Scan": "layerscan.geometry.scan_file",
    "DiffScan": "layerscan.geometry.diff_scan",
    "load": "layerscan.geometry.diff_scan",
    "LayerscanError": "layerscan.core.errors",
}
"""Public name → the module that defines it (PEP 562: imported on first use)."""
_RENAMED = {"load": "load_any"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerscan' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
