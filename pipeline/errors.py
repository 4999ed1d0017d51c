"""The one exception type stages raise for bad input: printed as one line, exit status 2."""


class StageError(Exception):
    """Bad input (missing file, corrupt data, missing weights): the message names the file and the fix."""
