"""Console and log file: a quiet console, everything in the run's log file.

Hydra configures logging (``conf/hydra/job_logging/gen_bench.yaml``): the root logger writes every
INFO line to ``<run dir>/train.log`` and, through :class:`QuietConsole`, only gen-bench's own lines and
warnings to the console.
"""

from __future__ import annotations

import logging
import warnings

LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class QuietConsole(logging.Filter):
    """Passes gen-bench's own records from INFO and everyone's from WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or (
            record.levelno >= logging.INFO and record.name.split(".")[0] == "gen_bench")


def route_library_logs() -> None:
    """Send Lightning's lines, and Python warnings, through the root logger's handlers only.

    Lightning adds its own console handler when it is imported (after Hydra configured logging), so
    each of its INFO lines would print twice, once past the quiet filter. Call after importing it.
    """
    if not logging.getLogger().handlers:  # nobody configured logging (a library user): leave it
        return
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    logging.captureWarnings(True)  # warnings go to the log file too (and, WARNING, to the console)
    # Lightning's own use of a torch API it calls deprecated: nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
