"""What the Lambda Python runtime gives a function, laid out on this machine for the cold-start probes.

Lambda's runtime holds the standard library (compiled), boto3 with what it needs, the layer in
``/opt/python`` and the function's code, and nothing else. This project's venv holds much more
(aws-sam-cli brings awscrt, pyOpenSSL and cryptography), and botocore imports awscrt and
pyOpenSSL when they are there: about 100 ms of every process here that Lambda never spends,
which would flatter every ratio to the baseline. So a probe runs with ``-S`` (no site-packages)
on directories made here:

- ``runtime``: boto3 at this venv's version, compiled, as the runtime has it;
- ``layer``: what ``layers/callvault/Makefile`` ships: the layer's requirements files and the
  ``callvault`` package (no ``admin``), compiled as that Makefile compiles them
  (``unchecked-hash``), or left as sources to measure a layer built where no Python 3.13 was at
  hand. Both are installed for the probing interpreter's version (the packages once per
  interpreter and requirements, kept under ``.local/bench/``);
- ``function``: the handler's ``*.py`` as ``sam build`` copies them, no bytecode (as deployed).

Probes run with ``PYTHONDONTWRITEBYTECODE=1``: ``/opt`` and the code are read-only in Lambda, so
sources are compiled again at every cold start there, and must be here too.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from importlib.metadata import distribution, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.processes import ROOT

LAYER = ROOT / "layers" / "callvault"
REQUIREMENTS = (LAYER / "requirements.txt", LAYER / "requirements-tracing.txt")
CACHE = ROOT / ".local" / "bench"


class LambdaSite:
    """The runtime, layer and function directories a probe runs on, made for ``python``."""

    def __init__(self, python: str, work: Path, *, layer_bytecode: bool) -> None:
        self.python = python
        self.runtime = _installed(python, "runtime", [f"boto3=={version('boto3')}"], compile_them=True)
        self.layer = work / ("layer" if layer_bytecode else "layer-sources")
        if not self.layer.exists():
            shutil.copytree(_layer_packages(python), self.layer, ignore=_not_shipped)
            shutil.copytree(LAYER / "callvault", self.layer / "callvault", ignore=_not_shipped)
            if layer_bytecode:
                _run([python, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(self.layer)])
        self._work = work

    def function(self, code_uri: str) -> Path:
        """The function's directory as ``sam build`` makes it: its Python files only."""
        target = self._work / "functions" / Path(code_uri).name
        if not target.exists():
            target.mkdir(parents=True)
            for source in sorted((ROOT / code_uri).glob("*.py")):
                shutil.copy2(source, target / source.name)
        return target

    def command(self) -> list[str]:
        return [self.python, "-S"]

    def python_path(self) -> str:
        # The project root for the probe module itself (bench/, standard library only before
        # the clock starts); then the layer before the runtime's packages, as Lambda orders them.
        return ":".join([str(ROOT), str(self.layer), str(self.runtime)])


def _layer_packages(python: str) -> Path:
    """The layer's requirements, as sources (the layer compiles them or not)."""
    packages = _installed(python, "layer", ["-r", str(REQUIREMENTS[0])], compile_them=False)
    tracing = _installed(python, "layer-tracing", ["--no-deps", "-r", str(REQUIREMENTS[1])], compile_them=False)
    merged = packages.with_name(packages.name + "-all")
    if not merged.exists():
        partial = _partial(merged)
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(packages, partial)
        shutil.copytree(tracing, partial, dirs_exist_ok=True)
        partial.rename(merged)
    return merged


def _installed(python: str, name: str, requirements: list[str], *, compile_them: bool) -> Path:
    """``requirements`` installed for ``python``'s version into a directory, made once and kept.

    For this venv's own interpreter they are copied from the venv, which holds exactly those
    versions (no registry needed: the harness's smoke test runs offline); for another (the
    runtime's 3.13) ``pip install --target`` fetches the wheels for it.
    """
    tag, prefix = _run(
        [python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}', sys.prefix)"]
    ).split()
    listed = [Path(item).read_text() if item.endswith(".txt") else item for item in requirements]
    digest = hashlib.sha256("\n".join([python, tag, str(compile_them), *listed]).encode()).hexdigest()[:12]
    target = CACHE / f"{name}-{tag}-{digest}"
    if target.exists():
        return target
    partial = _partial(target)
    shutil.rmtree(partial, ignore_errors=True)
    if prefix == sys.prefix:
        _copy_installed(requirements, partial)
    else:
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
        wheels_for = [
            "--target",
            str(partial),
            "--python-version",
            tag,
            "--implementation",
            "cp",
            "--only-binary=:all:",
        ]
        _run([*pip, *wheels_for, *requirements])
    shutil.rmtree(partial / "bin", ignore_errors=True)
    if compile_them:
        _run([python, "-m", "compileall", "-q", str(partial)])
    partial.rename(target)
    return target


def _copy_installed(requirements: list[str], target: Path) -> None:
    """The files of the distributions ``requirements`` name, and of what they need, from this venv."""
    with_dependencies = "--no-deps" not in requirements
    wanted: list[Requirement] = []
    for item in requirements:
        if item.endswith(".txt"):
            wanted += [Requirement(line) for line in _requirement_lines(Path(item))]
        elif not item.startswith("-"):
            wanted.append(Requirement(item))
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        key = canonicalize_name(requirement.name)
        if key in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(key)
        found = distribution(requirement.name)
        for file in found.files or []:
            source = Path(str(found.locate_file(file)))
            if (
                source.is_file()
                and ".." not in file.parts
                and file.parts[0] != "bin"
                and "__pycache__" not in file.parts
            ):
                (target / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / file)
        if with_dependencies:
            wanted += [Requirement(text) for text in found.requires or []]


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def _partial(target: Path) -> Path:
    # Made under another name and renamed when whole: an interrupted run leaves nothing that looks done.
    return target.with_name(target.name + ".partial")


def _not_shipped(directory: str, names: list[str]) -> set[str]:
    return {name for name in names if name in ("__pycache__", "admin") or name.endswith(".pyc")}


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - our own tools
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} … failed:\n{done.stderr[-3000:]}")
    return done.stdout
