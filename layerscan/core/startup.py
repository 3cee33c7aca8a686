"""A command's start-up (imports, loading the model and autoencoder) without garbage collection."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_collection() -> Iterator[None]:
    """Run the block with Python's cyclic garbage collector paused, then freeze what it built.

    Importing torch, transformers and PyVista and loading the embedded model make about
    770,000 objects that live as long as the process (modules, classes, functions, the
    model's modules), and almost no garbage (about 18,000 objects in cycles). With collection
    on, the collector walks all of them again each time the heap grows by a quarter, and once
    more at exit. After the block they move to the permanent generation (`gc.freeze`), which
    later collections and the exit skip, and collection resumes for the command's work; the
    block's few cycles of garbage are kept. Garbage from before the block is collected first
    (a few milliseconds at start-up), so that only the block's is kept. A nested block, or one
    entered while collection is off, changes nothing.
    """
    if not gc.isenabled():
        yield
        return
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
