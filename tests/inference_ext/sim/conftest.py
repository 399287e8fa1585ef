"""The simulator's shared fixtures (defined in tests/fixtures/sim.py)."""

from tests.fixtures.sim import sim_factory

__all__ = ["sim_factory"]
