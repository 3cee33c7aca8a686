"""layerscan: a transformer's hidden states as a 3D particle cloud moving through layer-time."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("layerscan")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
