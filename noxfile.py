"""Developer sessions: ``nox -s tests lint types smoke``.

Sessions reuse the current environment (``python=False``): the install step in README / ``.ci/run`` already
pins the torch/torchvision pair that works on CPU, and re-resolving it per session would download gigabytes.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "types", "tests"]


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    session.run("python", "-m", "pytest", "-q", *session.posargs, env={"HF_HUB_OFFLINE": "1"})


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", "pfbench", "tests", "noxfile.py")


@nox.session(python=False)
def types(session: nox.Session) -> None:
    session.run("mypy", "pfbench")


@nox.session(python=False)
def smoke(session: nox.Session) -> None:
    session.run("pfbench", "run", "suites/smoke.yaml", *session.posargs)
