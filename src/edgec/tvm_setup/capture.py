"""TVM's C/C++ output (warnings, IR dumps written to file descriptors 1 and 2) captured into the log."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def captured_fds() -> Iterator[list[str]]:
    """Capture what C/C++ code writes to file descriptors 1 and 2.

    TVM's importer and compiler print warnings and IR dumps straight to the
    process's stdout/stderr. Inside this context they go to a temporary file;
    the text is logged at DEBUG level and made available in the yielded list.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    text: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            captured = tmp.read().decode(errors="replace")
            text.append(captured)
            if captured.strip():
                log.debug("TVM output:\n%s", captured[-20000:])
