"""The error every corpus reader raises for a folder or file that does not have its corpus's layout
(workflows turn it into one `error:` line and exit code 2)."""


class LayoutError(ValueError):
    """The corpus folder does not have the expected layout; the message names the path and the fix."""
