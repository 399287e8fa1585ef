"""Every example runs as its header says, and the README's mesh walk-through runs as pasted.

Each file in ``examples/`` starts with a comment block of shell lines, in one convention::

    #   $ python -m gateway.demo.echo --port 9010 --name api &
    #   $ curl -s 127.0.0.1:8010/v1/users \\
    #       -H 'Host: api.example.com'
    #   expect: "backend": "api"
    #   $ kill %1

A ``$`` line is a command (a trailing backslash continues it on the next comment line, as in a
shell); an ``expect:`` line is text the output of the command above it must contain.

The ``$`` lines, in order, are one shell script (``&`` backgrounds a process, as when pasted;
the last line, ``kill %1 %2 ...``, stops them): this test runs it from the checkout with ``bash``,
on loopback, under a time limit, and checks that every ``expect:`` text appears in the output of
the command just above it. Then it kills whatever the script left running (its process group).
The README's fenced block under "The mesh: a two-node ztunnel on one machine" is run the same way,
as pasted, with the expectations listed here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(
    path for pattern in ("*.yaml", "*/*.yaml") for path in (ROOT / "examples").glob(pattern)
)
SCRIPT_TIMEOUT = 45.0
_MARK = "@@example-step"


@dataclass
class Step:
    command: str
    expect: list[str] = field(default_factory=list)


def parse_header(text: str) -> list[Step]:
    """The ``$`` commands of a file's comment lines, with their ``expect:`` lines."""
    steps: list[Step] = []
    continuing = False
    for line in text.splitlines():
        if not line.startswith("#"):
            continue
        body = line[1:].strip()
        if continuing:
            steps[-1].command += "\n" + body
        elif body.startswith("$ "):
            steps.append(Step(body[2:]))
        elif body.startswith("expect:") and steps:
            steps[-1].expect.append(body[len("expect:") :].strip())
        else:
            continue
        continuing = not body.startswith("expect:") and body.endswith("\\")
    return steps


def readme_mesh_block() -> str:
    """The first fenced bash block after the README's mesh heading."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The mesh: a two-node ztunnel on one machine", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the README's mesh section has no ```bash block"
    return match.group(1)


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # The checkout's code, and this interpreter's ``python`` and ``ambient`` first on PATH.
    env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("AMBIENT_PLUGINS", None)
    return env


def _skip_reason() -> str | None:
    if shutil.which("curl") is None:
        return "the examples' requests use curl, which is not installed"
    if shutil.which("bash") is None:
        return "the examples' commands are bash"
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.23", 0))
    except OSError:
        return "the examples put backends on 127.0.0.x addresses, which this host cannot bind"
    return None


def run_script(steps: list[Step], timeout: float = SCRIPT_TIMEOUT) -> list[str]:
    """Run the steps as one bash script; each step's output (stdout and stderr of it)."""
    lines = []
    for index, step in enumerate(steps):
        lines.append(f"printf '\\n{_MARK} {index}\\n'")  # outputs may not end in a newline
        lines.append(step.command)
    script = "\n".join(lines) + "\n"
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the servers' logs; failures show in the steps' output
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        raise AssertionError(f"no end in {timeout:.0f} s; output:\n{out}") from None
    finally:
        _kill_group(proc)
    parts = re.split(rf"\n{_MARK} (\d+)\n", "\n" + out)
    outputs = [""] * len(steps)
    for number, text in zip(parts[1::2], parts[2::2], strict=True):
        outputs[int(number)] = text
    assert proc.returncode == 0, f"the script exited {proc.returncode}; output:\n{out}"
    return outputs


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """End the script and everything it started and left running (one process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def check(steps: list[Step], outputs: list[str]) -> None:
    for step, output in zip(steps, outputs, strict=True):
        for text in step.expect:
            assert text in output, f"$ {step.command}\nexpected {text!r} in:\n{output}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_example_runs_as_documented(example: Path) -> None:
    reason = _skip_reason()
    if reason:
        print(f"skipped {example.name}: {reason}")
        pytest.skip(reason)
    steps = parse_header(example.read_text())
    assert any(step.command.rstrip().endswith("&") for step in steps), "no backends started"
    assert any(step.expect for step in steps), "no request with an expected answer"
    assert steps[-1].command.startswith("kill %"), "the last line should stop what it started"
    check(steps, run_script(steps))


@pytest.mark.timeout(120)
def test_readme_mesh_walkthrough_runs_as_pasted() -> None:
    reason = _skip_reason()
    if reason:
        print(f"skipped the README's mesh walk-through: {reason}")
        pytest.skip(reason)
    block = readme_mesh_block()
    assert "--state-dir ./" not in block and "kill %" in block
    outputs = run_script([Step(block)])
    assert "b'hello mesh\\n'" in outputs[0], outputs[0]
    assert 'connection_security_policy="mutual_tls"' in outputs[0], outputs[0]


def test_header_convention() -> None:
    text = """# intro
#   $ a &
#   $ b \\
#       --flag
#   expect: one
#   expect: two
#   not a command
apiVersion: v1
# $ c
"""
    steps = parse_header(text)
    assert [(s.command, s.expect) for s in steps] == [
        ("a &", []),
        ("b \\\n--flag", ["one", "two"]),
        ("c", []),
    ]
