"""Writing a report file atomically: readers see the old file or the whole new one, never half.

Models: `--json` / `--junit` output. The text goes to a temporary file in the same directory, is
flushed to disk, then renamed over the target (os.replace). ``remove_stale`` deletes a report an
earlier run left at the path, at the start of a run, so an interrupted or killed run never leaves
a report claiming success.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_text(path: str, text: str) -> None:
    """Write text to path atomically (temp file in the same directory + os.replace)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ptspec-", suffix=".tmp", dir=directory)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)          # the mode open() would give, not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_stale(path: str) -> None:
    """Remove a report left at path by an earlier run (a missing file is fine; a directory or an
    unwritable place is an OSError for the caller to report)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
