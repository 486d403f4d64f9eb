"""Where messages go when the ``biomegatron`` command runs: its result on stdout, nothing else; logs
on stderr at the level the user chooses.

The libraries underneath talk a lot on their own: NeMo logs at INFO level to stdout (restore
banners, optimiser settings, the data configs a restored model was trained with), OneLogger
announces that it collects no telemetry, Lightning and megatron-core print notices and warnings.
:func:`configure_logging` sends all of it to stderr and, at the default verbosity, keeps only
errors from them and warnings from this library:

* ``0`` (default): this library's warnings; other libraries' errors only;
* ``1`` (``--verbose``): everything at INFO level;
* ``2`` (``--debug``): everything at DEBUG level (and the command shows tracebacks).

One handler on the root logger, writing to stderr, decides by where a record comes from: the
libraries reset their loggers' levels when they are imported, so levels cannot decide. Lightning's
top package adds a console handler of its own on import, which is taken away then (records reach
the root handler instead; importing Lightning up front would cost a light command seconds). NeMo's
logger does not propagate: its level is set right after it is imported (``exp_manager`` later gives
that level to megatron-core's logger, with NeMo's handlers), a logger filter holds if NeMo resets
it, and its INFO stream is moved to stderr. Library code only logs through :func:`logging.getLogger` (``biomegatron_nemo.*``) and
leaves handlers to the application.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from biomegatron_nemo.common.imports import after_import

LIBRARY_LOGGER = "biomegatron_nemo"
NEMO_LOGGER = "nemo_logger"
LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


class LevelByOrigin(logging.Filter):
    """Keeps this library's records from ``ours`` up, every other library's from ``others`` up."""

    def __init__(self, ours: int, others: int):
        super().__init__()
        self.ours, self.others = ours, others

    def filter(self, record: logging.LogRecord) -> bool:
        mine = record.name == LIBRARY_LOGGER or record.name.startswith(LIBRARY_LOGGER + ".")
        return record.levelno >= (self.ours if mine else self.others)


def _drop_lightning_console() -> None:
    """Lightning's own console handler (INFO, stderr) would print beside the root handler."""
    lightning = logging.getLogger("lightning")
    for handler in [h for h in lightning.handlers if type(h) is logging.StreamHandler]:
        lightning.removeHandler(handler)


class CurrentStderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (notebooks and test runners replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the current sys.stderr is always used
        pass


def configure_logging(verbosity: int = 0) -> None:
    """Route every log to stderr and set the levels (see the module docstring)."""
    ours = LEVELS[max(0, min(verbosity, 2))]
    others = ours if verbosity > 0 else logging.ERROR
    os.environ["NEMO_REDIRECT_LOGS_TO_STDERR"] = "1"  # read when NeMo adds its handlers
    logging.captureWarnings(True)  # Python warnings become records of py.warnings (another library's)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "biomegatron", False)]:
        root.removeHandler(old)
    handler = CurrentStderr()
    handler.biomegatron = True
    handler.addFilter(LevelByOrigin(ours, others))
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if verbosity == 0
                                           else "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(ours)
    logging.getLogger(LIBRARY_LOGGER).setLevel(ours)
    nemo = logging.getLogger(NEMO_LOGGER)
    for old in [f for f in nemo.filters if isinstance(f, LevelByOrigin)]:
        nemo.removeFilter(old)
    nemo.addFilter(LevelByOrigin(ours, others))
    after_import("lightning", "logging", _drop_lightning_console)
    if "nemo.utils" in sys.modules:  # already imported: its stdout handler exists, move it to stderr
        from nemo.utils import logging as nemo_logging

        if "stream_stdout" in nemo_logging._handlers:  # NeMo streams on global rank 0 only
            nemo_logging.remove_stream_handlers()
            nemo_logging.add_stream_handlers()
    after_import("nemo.utils", "logging", lambda: _set_nemo_level(others))


def _set_nemo_level(level: int) -> None:
    """NeMo's own level (set to INFO on import), which exp_manager also gives megatron-core's
    logger when it attaches NeMo's handlers to it. The logger's level only: NeMo's ``setLevel``
    would also set every handler of its logger, some of which are not NeMo's own."""
    logging.getLogger(NEMO_LOGGER).setLevel(level)


@contextlib.contextmanager
def quiet_nemo(quiet: bool = True):
    """A context in which NeMo logs errors only (when ``quiet``): for library code that calls into
    NeMo where it would warn about nothing the user did (restoring, it recites the training data
    configs of whoever trained the model)."""
    nemo = logging.getLogger(NEMO_LOGGER)
    level = nemo.level
    if quiet:
        nemo.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        nemo.setLevel(level)
