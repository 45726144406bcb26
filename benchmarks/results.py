"""Where the benchmark scripts write their figures: checked first, written atomically.

A benchmark runs for minutes, so its ``--out`` is checked before any
measurement (an existing folder or device, or a parent that cannot be written,
is refused at once), and the JSON is written to a temporary file in the same
folder and renamed over the target, so an interrupted write never leaves half
a file. The scripts write what they measured so far, marked ``"partial": true``,
when interrupted with Ctrl-C.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from jaxgrad._src.study import temporary_file


def check_out_file(parser: Any, path: str) -> None:
    """Refuses (``parser.error``: one line, exit 2) an ``--out`` that cannot take a file."""
    if os.path.lexists(path) and not os.path.isfile(path):
        parser.error(f"argument --out: {path!r} exists and is not a regular file")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)  # the nearest existing folder, created later
    try:  # probe by writing, as root passes os.access checks on read-only mounts such as /sys
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".bench-probe-"))
    except OSError as err:
        parser.error(f"argument --out: cannot write {path!r} in {parent!r} ({err.strerror or err})")


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically (temporary file, then ``os.replace``)."""
    path = os.path.abspath(path)  # the form check_out_file checked ("a/../b" included)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_file(folder, ".bench-", ".json")  # the umask's mode, not mkstemp's 0600
    try:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
