"""Loading models and data, the inference cache, the store and the built-in demos."""

from workspace.errors import WorkspaceError

__all__ = ["WorkspaceError"]
