#!/usr/bin/env bash
# The `mcp` 2.x line for the v2 client tests (tests/fixtures/mcp2_env.py), in its own venv
# `.venv-mcp2` at the repository root: the test extras hold the 1.x line and both are imported as
# `mcp`. CI and the README's test command run this; running it again only checks the install.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-mcp2/bin/python ] || python3 -m venv .venv-mcp2
.venv-mcp2/bin/pip install -q 'mcp==2.3.*'
