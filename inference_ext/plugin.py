"""The inference extension's registrations with the gateway (``ambient.plugins`` entry point)."""

from __future__ import annotations

import argparse

from gateway.plugins import PluginApi


def _sim_configure(parser: argparse.ArgumentParser) -> None:
    from inference_ext.sim.cli import configure

    configure(parser)


def _sim_run(args: argparse.Namespace) -> int:
    from inference_ext.sim.cli import run

    return run(args)


def _epp_configure(parser: argparse.ArgumentParser) -> None:
    from inference_ext.extproc.cli import configure

    configure(parser)


def _epp_run(args: argparse.Namespace) -> int:
    from inference_ext.extproc.cli import run

    return run(args)


def register(api: PluginApi) -> None:
    """Everything the inference extension adds to the gateway."""
    api.command("sim", "run vLLM-compatible model-server simulators", _sim_configure, _sim_run)
    api.command(
        "epp",
        "serve an InferencePool's endpoint picker over Envoy ext_proc",
        _epp_configure,
        _epp_run,
    )
