"""The operator's side of callvault: the ``callvault`` command (not shipped in the Lambda layer)."""
