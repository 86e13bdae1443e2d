"""The Dockerfile's commands, run without Docker: what CI can prove of the image.

:func:`parse` reads the Dockerfile into stages of instructions. :class:`Emulation` runs a
stage's instructions on this machine: each stage's filesystem is a directory, an image
path (``/wheels``) is that directory's ``wheels``, ``RUN`` goes to ``/bin/sh -c`` with the
stage's ``ENV`` (absolute paths mapped), ``COPY`` copies from the build context or an
earlier stage, ``USER`` makes every later command run as that uid when this process is
root. The user-creating ``RUN`` is the one line not run: the uid is used as it stands.
``python`` is the interpreter given (the image's Python).

The supported subset is what token-vault's Dockerfile uses; anything else fails loudly,
so the Dockerfile cannot grow a command this emulation silently skips.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_CREATION = re.compile(r"^(useradd|adduser|groupadd|addgroup)\b")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ENV...
    text: str  # the rest, continuation lines joined

    def exec_form(self) -> list[str]:
        """The JSON array form (``["token-vault", "serve"]``) of ENTRYPOINT and CMD."""
        value = json.loads(self.text)
        assert isinstance(value, list), f"{self.keyword} must use the exec (JSON) form"
        return [str(v) for v in value]


@dataclass(slots=True)
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name or self.image}"
        return found[0]


@dataclass(slots=True)
class Dockerfile:
    args: dict[str, str]  # ARGs before the first FROM, with their defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        """The final stage's HEALTHCHECK: its options and its exec-form command."""
        text = self.final.one("HEALTHCHECK").text
        options, _, command = text.partition("CMD ")
        flags = dict(o.lstrip("-").split("=", 1) for o in options.split())
        return flags, Instruction("CMD", command).exec_form()


def parse(text: str) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in _instructions(text):
        if instruction.keyword == "FROM":
            image, _, name = instruction.text.partition(" AS ")
            image = _substitute(image.strip(), args)
            stages.append(Stage(image, name.strip() or None))
        elif not stages and instruction.keyword == "ARG":
            name, _, default = instruction.text.partition("=")
            args[name.strip()] = default.strip()
        else:
            assert stages, f"{instruction.keyword} before FROM"
            stages[-1].instructions.append(instruction)
    return Dockerfile(args, stages)


def _instructions(text: str) -> list[Instruction]:
    found: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments, parser directives, blank lines (also inside continuations)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(rest.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    return found


def _substitute(value: str, env: Mapping[str, str]) -> str:
    return _VARIABLE.sub(lambda m: env.get(m[1] or m[2], ""), value)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a command runs as: the image's uid when this process is root, else as is."""

    uid: int | None = None
    gid: int | None = None
    extra_groups: list[int] | None = None

    @classmethod
    def of(cls, user: tuple[int, int] | None) -> Identity:
        if user is None or os.getuid() != 0:
            return cls()
        return cls(user[0], user[1], [])


@dataclass(slots=True)
class StageState:
    """A stage's filesystem (a directory), environment, working directory and user."""

    root: Path
    env: dict[str, str]
    workdir: str = "/"
    user: tuple[int, int] | None = None

    def host(self, image_path: str) -> Path:
        assert image_path.startswith("/"), image_path
        return self.root / image_path.lstrip("/")


class Emulation:
    """Runs a parsed Dockerfile's stages in directories under ``root``."""

    def __init__(self, dockerfile: Dockerfile, *, context: Path, root: Path, python: str):
        self.dockerfile = dockerfile
        self.context = context
        self.root = root
        self.shims = root / "shims"
        self.shims.mkdir(parents=True, exist_ok=True)
        (self.shims / "python").symlink_to(python)
        self.states: dict[str, StageState] = {}
        self.log: list[str] = []  # every command run, for the test's messages

    def build(self) -> StageState:
        """Run every stage in order; return the final stage's state."""
        state = None
        for number, stage in enumerate(self.dockerfile.stages):
            state = self._run_stage(stage, stage.name or f"stage{number}")
        assert state is not None
        return state

    def _run_stage(self, stage: Stage, name: str) -> StageState:
        state = StageState(self.root / name, {"PATH": f"{self.shims}:{BASE_PATH}"})
        state.root.mkdir()
        self.states[name] = state
        for instruction in stage.instructions:
            handler = getattr(self, f"_{instruction.keyword.lower()}", None)
            assert handler is not None, f"the emulation has no {instruction.keyword}"
            handler(state, instruction.text)
        return state

    # -- instructions ----------------------------------------------------------------

    def _env(self, state: StageState, text: str) -> None:
        before = dict(state.env)  # one ENV line sees the values from before it
        for item in shlex.split(text):
            name, _, value = item.partition("=")
            if value.startswith("/"):  # an image path
                state.env[name] = str(state.host(value))
            else:
                state.env[name] = _substitute(value, before)

    def _workdir(self, state: StageState, text: str) -> None:
        state.workdir = text if text.startswith("/") else f"{state.workdir}/{text}"
        state.host(state.workdir).mkdir(parents=True, exist_ok=True)

    def _copy(self, state: StageState, text: str) -> None:
        words = text.split()
        source_root = self.context
        if words[0].startswith("--from="):
            source_root = self.states[words.pop(0).partition("=")[2]].root
        *sources, target = words
        destination = state.host(target if target.startswith("/") else f"{state.workdir}/{target}")
        into_directory = target.endswith("/") or len(sources) > 1
        for source in sources:
            path = source_root / source.lstrip("/")
            assert path.exists(), f"COPY: no {source} in {source_root}"
            if path.is_dir():
                shutil.copytree(path, destination, dirs_exist_ok=True)
            elif into_directory:
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination / path.name)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)

    def _run(self, state: StageState, text: str) -> None:
        if USER_CREATION.match(text):
            return  # the image's user; here the uid of USER is used as it stands
        done = self.run(state, ["/bin/sh", "-c", text], timeout=900)
        assert done.returncode == 0, f"RUN {text}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"

    def _user(self, state: StageState, text: str) -> None:
        uid, _, gid = text.partition(":")
        assert f"{uid}{gid}".isdigit(), "USER must be numeric uid:gid"
        state.user = (int(uid), int(gid))

    def _noop(self, state: StageState, text: str) -> None:
        """Metadata for Docker that runs nothing here (read by the tests instead)."""

    _expose = _healthcheck = _entrypoint = _cmd = _arg = _noop

    # -- running commands in a stage --------------------------------------------------

    def environment(self, state: StageState, extra: Mapping[str, str] = {}) -> dict[str, str]:
        env = {"HOME": str(state.host("/nonexistent")), "LANG": "C.UTF-8", **state.env}
        for name, value in extra.items():
            env[name] = str(state.host(value)) if value.startswith("/") else value
        return env

    def _as_user(self, state: StageState) -> Identity:
        return Identity.of(state.user)

    def run(
        self,
        state: StageState,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] = {},
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        self.log.append(" ".join(argv))
        return subprocess.run(
            list(argv),
            cwd=state.host(state.workdir),
            env=self.environment(state, env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            umask=0o022,
            user=self._as_user(state).uid,
            group=self._as_user(state).gid,
            extra_groups=self._as_user(state).extra_groups,
        )

    def start(
        self, state: StageState, argv: Sequence[str], *, env: Mapping[str, str] = {}
    ) -> subprocess.Popen[str]:
        self.log.append(" ".join(argv))
        return subprocess.Popen(
            list(argv),
            cwd=state.host(state.workdir),
            env=self.environment(state, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            umask=0o022,
            user=self._as_user(state).uid,
            group=self._as_user(state).gid,
            extra_groups=self._as_user(state).extra_groups,
        )


def absolute_paths_in_commands(dockerfile: Dockerfile) -> list[str]:
    """Literal absolute paths in RUN, HEALTHCHECK, ENTRYPOINT and CMD (there must be none:
    the emulation maps image paths only where they are ENV values, WORKDIR or COPY)."""
    found: list[str] = []
    for stage in dockerfile.stages:
        for instruction in stage.instructions:
            if instruction.keyword not in {"RUN", "HEALTHCHECK", "ENTRYPOINT", "CMD"}:
                continue
            if USER_CREATION.match(instruction.text):
                continue
            found += re.findall(r"(?<![\w$}.:/])/[A-Za-z][\w./-]*", instruction.text)
    return [path for path in found if not path.startswith("/healthz")]


def python_for(user: tuple[int, int] | None, version: str, candidates: Sequence[str]) -> str:
    """The first interpreter of ``version`` (e.g. "3.11") that ``user`` can run with venv."""
    identity = Identity.of(user)
    probe = "import ensurepip, sys, venv; print('%d.%d' % sys.version_info[:2])"
    tried: list[str] = []
    for candidate in candidates:
        path = shutil.which(candidate)
        if path is None:
            continue
        try:
            done = subprocess.run(
                [path, "-c", probe],
                capture_output=True,
                text=True,
                check=False,
                cwd="/",
                user=identity.uid,
                group=identity.gid,
                extra_groups=identity.extra_groups,
            )
        except PermissionError as exc:  # e.g. under root's private home
            tried.append(f"{path}: {exc.strerror}")
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return path
        tried.append(f"{path}: {done.stdout.strip() or done.stderr.strip()[-200:]}")
    raise AssertionError(f"no Python {version} with venv that uid {user} can run: {tried}")
