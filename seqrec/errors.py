"""The project's exceptions: input a user can fix (a recipe, a raw file, a command-line value).

`seqrec` (the command line) prints their message and exits with status 2, without a traceback;
anything else is a bug and keeps its traceback. Standard library only, so every stage (and a
client installed without the rest) can import it.
"""
from __future__ import annotations


class SeqrecError(Exception):
    """Bad input named in the message; the command line shows the message alone."""


class ConfigError(SeqrecError, ValueError):
    """A recipe or config value that cannot become a config: `path` is where (dotted, e.g.
    `train.model.side_features`), `problem` is what; str() is `path: problem`."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}" if path else problem)

    def under(self, parent: str) -> "ConfigError":
        """The same error seen from the config one level up (`parent` prefixed to the path)."""
        if not parent:
            return self
        return ConfigError(f"{parent}.{self.path}" if self.path else parent, self.problem)


__all__ = ["SeqrecError", "ConfigError"]
