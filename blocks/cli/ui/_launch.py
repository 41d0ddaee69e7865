"""``block ui --open``: open the browser without a secret on its command line.

A browser's command line is public (``ps``, ``/proc/PID/cmdline``) for as long as it runs, and a
one-time code there could be raced by whoever watches the process list. So the browser is given
the path of a small HTML file instead, private to the user (mode 0600 in a 0700 folder), that
forwards to a one-time sign-in URL; the code in it works once and only for `OPEN_TTL` seconds,
and the file is deleted as soon as it was used (or when the server stops).
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
import webbrowser
from pathlib import Path

#: Seconds the code in the launch file stays valid (a cold browser start fits in it).
OPEN_TTL = 60.0


class LaunchFile:
    """A private file that forwards the browser to `url` once; `remove()` deletes it."""

    def __init__(self, url: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="blocks-ui-"))  # mode 0700
        self.path = self.folder / "open.html"
        target = html.escape(url, quote=True)
        page = (
            '<!doctype html><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="0;url={target}">'
            f'<title>blocks UI</title><p><a href="{target}">Open the blocks UI</a></p>\n'
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(page)

    def open(self) -> None:
        """Start the user's browser (``BROWSER`` or the system default) on the file."""
        webbrowser.open(self.path.as_uri())

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
