"""Files kcc-mail writes outside the database (outgoing .eml files, exports): private, whole, never redirected.

Each is written under a random name in the target folder, created exclusively (O_EXCL, so a planted file or symlink
is never opened) with mode 0600 whatever the umask, flushed to disk, and then renamed over the target: a reader
sees the old file or the new one, and a symlink planted at the target is replaced, never followed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically as a 0600 file; raises OSError (and leaves no half file) on failure."""
    descriptor, temporary = tempfile.mkstemp(prefix=".kcc-", suffix=".part", dir=path.parent)
    try:
        os.fchmod(descriptor, PRIVATE_FILE)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def private_folder(path: Path) -> None:
    """Create `path` (and its parents) as 0700 folders when missing; an existing folder keeps its mode."""
    if not path.is_dir():
        path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
