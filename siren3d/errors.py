"""The one exception type for problems a user can cause (bad input, bad options, bad files).

The CLI turns it into a single line on stderr and exit status 2; library callers can catch it.
"""

from __future__ import annotations

import os


class Siren3dError(Exception):
    """A problem with the user's input or options, with a message that says what to do."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class SettingError(Siren3dError, ValueError):
    """A setting outside its valid range or choices (see siren3d.config); also a ValueError.

    ``setting`` is the setting's dotted name ('lr', 'model.w0'), so the CLI can name its option.
    """

    def __init__(self, message: str, setting: str | None = None):
        self.setting = setting
        super().__init__(message)
