"""mesh.yaml reload: changes are picked up by polling; a broken edit keeps the previous state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from mesh.state.registry import MeshState
from mesh.state.watch import MeshWatcher
from tests.mesh.conftest import namespace, pod


async def test_reload_on_change_and_keep_state_on_error(tmp_path: Path) -> None:
    f = tmp_path / "mesh.yaml"
    f.write_text(yaml.safe_dump_all([namespace("default"), pod("a", "10.0.0.1", "n", "a")]))
    watcher = MeshWatcher(f, "cluster.local", interval=0.05)
    seen: list[MeshState] = []
    watcher.subscribe(seen.append)
    watcher.start()
    try:
        f.write_text(
            yaml.safe_dump_all(
                [
                    namespace("default"),
                    pod("a", "10.0.0.1", "n", "a"),
                    pod("b", "10.0.0.2", "n", "b"),
                ]
            )
        )
        for _ in range(40):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen and len(seen[-1].workloads) == 2
        f.write_text("kind: Pod\nmetadata: {name: broken}\n")  # no status.podIP
        await asyncio.sleep(0.3)
        assert len(seen) == 1
        assert len(watcher.state.workloads) == 2
    finally:
        await watcher.stop()
