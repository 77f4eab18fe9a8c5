"""The one exception type that user-facing code raises for bad input."""


class ZsimInputError(ValueError):
    """Bad input from the user: an unknown name, a malformed file, an impossible value.

    The CLI turns it into one line on stderr and exit code 2; the message must name the
    offending key, value or file so that the user can fix it without reading a traceback.
    """
