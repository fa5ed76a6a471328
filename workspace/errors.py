"""The one exception type users see.

Everything that goes wrong because of user input (a missing file, a corrupt checkpoint,
a model whose output does not match the classes) raises :class:`WorkspaceError` with a
single readable line. The CLI prints it and exits with status 2; pages show it with
``st.error``. Programming errors keep their own types so they are not mistaken for
bad input.
"""


class WorkspaceError(Exception):
    """A problem with the user's workspace, model or data, described in one line."""

    def __str__(self) -> str:  # always one line, whatever the cause carried
        return " ".join(str(self.args[0]).split()) if self.args else "workspace error"


class Cancelled(Exception):
    """A long task stopped because the user asked it to (a job's cancel, a page's button, Ctrl-C)."""
