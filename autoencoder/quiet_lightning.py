"""Lightning's log noise: the info lines and warnings that training and extraction drop."""

from __future__ import annotations

import logging
import warnings

LIGHTNING_NOISE = ("litlogger", "was configured so", "to estimate number of stepping batches")
"""Lightning's info lines that `train` drops: its logger tip and echoes of its own settings."""


class _QuietLightning(logging.Filter):
    """Drops the LIGHTNING_NOISE lines; the progress bar, metrics and other notes stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in LIGHTNING_NOISE)


def quiet_pytree() -> None:
    """pytorch-lightning 2.6 warns about its own use of a deprecated torch API on every run."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")


def quiet_lightning() -> None:
    """Install the filter on Lightning's rank-zero logger (once)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietLightning) for f in logger.filters):
            logger.addFilter(_QuietLightning())
