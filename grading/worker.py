"""The sandbox side: run a notebook's code cells, then answer the grader's requests.

Started by :mod:`grading.sandbox` inside bubblewrap as ``python -m grading.worker NOTEBOOK
READ_FD WRITE_FD`` (the request and reply pipes; stdout and stderr go to the grader's log).
When started as root inside the sandbox it first drops to the unprivileged uid in
``GRADING_SANDBOX_UID``, so the process-count limit applies.

The notebook's code cells run in one namespace, in order, in a plain Python process (much
faster than a Jupyter kernel); IPython magics and shell lines are skipped, an error in a cell
is recorded and the next cell runs (as ``otter run`` does). ``import otter`` gets a stub whose
``grader.check`` does nothing: the public tests are the student's feedback, and the grader
judges the same requirements itself.

Everything here runs next to student code, which can change any of it: nothing this process
says is trusted. The grader accepts only data (:mod:`grading.protocol`) and checks it against
its own computation.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

UID_ENV = "GRADING_SANDBOX_UID"
#: Longest error message sent back for a failing student call.
MAX_ERROR = 2000


def drop_privileges() -> None:
    """Become the unprivileged uid/gid in ``GRADING_SANDBOX_UID`` if started as root."""
    uid = os.environ.get(UID_ENV)
    if os.getuid() == 0 and uid:
        os.setgroups([])
        os.setgid(int(uid))
        os.setuid(int(uid))
    if os.getuid() == 0 and uid:
        raise SystemExit("could not drop root privileges")


def _otter_stub() -> types.ModuleType:
    """``otter`` as the notebook sees it: ``otter.Notebook(...).check(...)`` does nothing."""

    class Notebook:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __getattr__(self, name: str) -> Callable[..., None]:
            return lambda *args, **kwargs: None

    module = types.ModuleType("otter")
    module.Notebook = Notebook  # type: ignore[attr-defined]
    return module


def code_cells(notebook: dict[str, Any]) -> list[str]:
    """The code cells' sources, with IPython magics and shell lines (``%``, ``!``) dropped.

    A cell magic (``%%time``) drops its whole cell.
    """
    cells = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if source.lstrip().startswith("%%"):
            continue
        lines = [
            f"pass  # {line.strip()}" if line.lstrip().startswith(("%", "!")) else line
            for line in source.splitlines()
        ]
        cells.append("\n".join(lines))
    return cells


def run_notebook(path: str) -> tuple[dict[str, Any], list[str]]:
    """Execute the notebook's code cells; return the namespace and the errors raised."""
    with open(path, encoding="utf-8") as f:
        notebook = json.load(f)
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    namespace["display"] = lambda *args, **kwargs: None
    errors = []
    for index, source in enumerate(code_cells(notebook)):
        try:
            exec(compile(source, f"<cell {index}>", "exec"), namespace)
        except BaseException as exc:  # a student's cell may raise anything, exit included
            errors.append(f"cell {index}: {type(exc).__name__}: {exc}"[:300])
            traceback.print_exc()
        for stream in (sys.stdout, sys.stderr):  # the sandbox ends with SIGKILL: no buffers
            with contextlib.suppress(Exception):
                stream.flush()
    return namespace, errors


def _to_wire(value: Any) -> Any:
    """A stand-in's arguments as data: tensors as arrays, the grader's models by spec."""
    import torch
    from torch import nn

    from grading.scenarios import SPECS, StudentError

    if type(value) is torch.Tensor:
        return value.detach().cpu().contiguous().numpy().copy()
    if isinstance(value, nn.Module):
        if value not in SPECS:
            raise StudentError("stand-ins run only on the grader's models")
        return {"model": SPECS[value]}
    if isinstance(value, (tuple, list, torch.Size)):
        return {"tuple": [_to_wire(v) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise StudentError(f"a stand-in cannot take a {type(value).__name__}")


def _from_wire(value: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, list):
        return tuple(_from_wire(v) for v in value)
    return value


_SERVER: list[Server] = []


def remote(name: str) -> Callable[..., Any]:
    """A function the grader computes during a request (see :meth:`Server.remote`)."""

    def stand_in(*args: Any) -> Any:
        if not _SERVER:
            raise RuntimeError(f"{name} is computed by the grader, during grading only")
        return _SERVER[0].remote(name)(*args)

    stand_in.__name__ = name
    return stand_in


class Server:
    """Answers requests on the channel with :data:`grading.scenarios.SCENARIOS`."""

    def __init__(self, channel: Any, namespace: dict[str, Any]) -> None:
        """Serve ``namespace`` (the executed notebook) over ``channel``."""
        self.channel, self.namespace = channel, namespace
        self.serving = False

    def remote(self, name: str) -> Callable[..., Any]:
        """A function the grader computes, usable only while a request runs.

        A stand-in for an earlier answer, or an allowed reference such as A2's
        ``guided_backprop``.
        """

        def stand_in(*args: Any) -> Any:
            from grading.scenarios import StudentError

            if not self.serving:
                raise RuntimeError(f"{name} is computed by the grader, during grading only")
            self.channel.send({"op": "callback", "name": name, "args": _to_wire(list(args))})
            reply = self.channel.receive()
            if "error" in reply:
                raise StudentError(f"{name}: {reply['error']}")
            return _from_wire(reply["value"])

        stand_in.__name__ = name
        return stand_in

    def serve(self) -> None:
        """Answer requests until the grader closes the channel."""
        from grading.protocol import ProtocolError
        from grading.scenarios import SCENARIOS

        while True:
            try:
                request = self.channel.receive()
            except ProtocolError:
                return
            scenario = SCENARIOS[request["scenario"]]
            self.serving = True
            try:
                value = scenario(self.namespace, self.remote, **request["params"])
                reply = {"op": "result", "ok": True, "value": value}
            except BaseException as exc:
                message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
                reply = {"op": "result", "ok": False, "error": message}
            finally:
                self.serving = False
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
            self.channel.send(reply)


def main(argv: list[str] | None = None) -> int:
    """Entry point inside the sandbox: ``python -m grading.worker NOTEBOOK READ_FD WRITE_FD``."""
    path, read_fd, write_fd = argv if argv is not None else sys.argv[1:]
    drop_privileges()
    sys.modules["otter"] = _otter_stub()
    import torch

    torch.set_num_threads(1)
    from grading.protocol import Channel

    channel = Channel(int(read_fd), int(write_fd))
    os.set_inheritable(int(read_fd), False)
    os.set_inheritable(int(write_fd), False)
    sys.modules.setdefault("grading.worker", sys.modules[__name__])
    namespace, errors = run_notebook(path)
    channel.send({"op": "ready", "errors": errors[:20]})
    _SERVER.append(Server(channel, namespace))
    _SERVER[0].serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
