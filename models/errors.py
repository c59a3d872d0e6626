"""The error users see.

Anything a user can cause (a missing file, a malformed caption file, mismatched vectors) raises
``BeamlensError`` with a message that names the file or record at fault. The CLI prints that
message alone, without a traceback, and exits with status 2; everything else is a bug and keeps
its traceback.
"""


class BeamlensError(Exception):
    """A problem with the user's input or environment, explained in the message."""
