"""The self-contained HTML page (inline canvas viewer, no network) that `export_html` fills in.

The page and its script are package data (viewer.html, viewer.js), so they are edited and
linted as what they are; the export inlines both, with the scan's data, into one file.
"""

from __future__ import annotations

import functools
from importlib.resources import files

DATA_MARK = "/*LAYERSCAN_DATA*/null"
SCRIPT_MARK = "/*LAYERSCAN_VIEWER*/"


@functools.lru_cache(maxsize=1)
def _template() -> str:
    here = files("layerscan.geometry.scene")
    html = (here / "viewer.html").read_text(encoding="utf-8")
    script = (here / "viewer.js").read_text(encoding="utf-8")
    if "</script" in script:
        raise RuntimeError("viewer.js must not contain a closing script tag")
    return html.replace(SCRIPT_MARK, script)


def page(payload: str) -> str:
    """The whole page with `payload` (JSON, `</` escaped) as its DATA."""
    return _template().replace(DATA_MARK, payload)
