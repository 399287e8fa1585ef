"""The error every configuration problem that stops start-up (or a reload) is raised as."""

from __future__ import annotations


class ConfigError(Exception):
    """Invalid configuration; each message line names the file, the object and the field path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
