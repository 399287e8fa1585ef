"""Rollout states on disk (``--state-dir``): one JSON file per rollout, replaced atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson

from inference_ext.rollout.analysis import RolloutState

log = logging.getLogger("inference_ext.rollout")


class StateStore:
    """``<state-dir>/rollouts/<namespace>_<name>.json`` (a namespace has no ``_``)."""

    def __init__(self, state_dir: str) -> None:
        self.directory = Path(state_dir) / "rollouts"
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, namespace: str, name: str) -> Path:
        """The file of rollout ``namespace/name``."""
        return self.directory / f"{namespace}_{name}.json"

    def load(self, namespace: str, name: str) -> RolloutState | None:
        """The saved state, or None (none saved; a damaged file is logged and ignored)."""
        path = self.path(namespace, name)
        try:
            return RolloutState.from_json(orjson.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("rollout %s/%s: cannot read %s: %s", namespace, name, path, exc)
            return None

    def save(self, namespace: str, name: str, state: RolloutState) -> None:
        """Write the state: a temporary file, fsync, then rename over the old one."""
        path = self.path(namespace, name)
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "wb") as file:
            file.write(orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
