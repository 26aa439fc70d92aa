"""Hostile submissions for tests/test_attacks.py: one or more per attack class.

Each attack is a code cell appended to a base notebook (an assignment's solution or its
blank release), so it runs after the answers and may redefine them. Attacks that answer one
question by cheating start from the blank release (quick to grade): the cheated question
must still score 0. The committed fixtures (tests/fixtures/submissions/) show on the full
solution that such an answer costs that question only. ``{placeholders}`` are
filled in by the test with absolute paths of the grading machine: a canary file, another
student's submission, the attack's own original file, the gradebook, the course_utils
sources. The expected verdict is the whole point of each attack:

* ``zero``: graded to the end (status ``ok``) or stopped (any other status), with 0 points;
* ``status:<s>``: that status (and so 0 points);
* ``only:<q>[,<q>...]``: the solution's full marks except these questions (the attacked
  answer, and in A1 the questions that build on it);
* ``full``: the solution's full marks: the attack tried to read, leak or break something
  outside its sandbox, which the test checks separately.

``REPLY`` is the worker's reply pipe (its last command-line argument), which student code can
find as easily: attacks on the protocol write there.
"""

from __future__ import annotations

from typing import NamedTuple

#: Prepended to every attack: the reply pipe's file descriptor.
PRELUDE = "import sys as _sys\nREPLY = int(_sys.argv[-1])\n"


class Attack(NamedTuple):
    base: str  # "<assignment>:solution" or "<assignment>:blank"
    expect: str
    code: str


A2, A1 = "a2_grad_cam", "a1_guided_backprop"

ATTACKS: dict[str, Attack] = {
    # --- forged full marks (the first class): forge the verdict, not the answers
    "forge_otter_and_pickle": Attack(
        f"{A2}:blank",
        "zero",
        """
import pickle, sys, importlib
pickle.dump = lambda obj, f, *a, **k: f.write(b"forged")
for name in ["otter", "otter.test_files", "otter.execute"]:
    try:
        module = importlib.import_module(name)
        for attr in dir(module):
            obj = getattr(module, attr)
            if isinstance(obj, type):
                obj.score = property(lambda self: 10)
    except Exception:
        pass
grader.check_all()
""",
    ),
    "forge_observations": Attack(
        f"{A2}:blank",
        "zero",
        """
import numpy as np, torch
import grading.scenarios as s
def fake(namespace, remote, **params):
    first = params.get("args", [np.zeros((2, 2), np.float32)])[0]
    shape = getattr(first, "shape", (2,))
    full = {"array": np.zeros(shape[:1] or (1,), np.float32), "requires_grad": True}
    return {"result": full, "inputs": [], "models": []}
s.SCENARIOS["call"] = fake
s.observe = lambda value, what="": {"array": np.ones(3, np.float32), "requires_grad": True}
""",
    ),
    "forge_protocol_messages": Attack(
        f"{A2}:blank",
        "zero",
        """
import os, numpy as np
from grading.protocol import encode
os.write(REPLY, encode({"op": "ready", "errors": []}))
for _ in range(50):
    os.write(REPLY, encode({"op": "result", "ok": True,
                        "value": {"result": {"array": np.zeros(3, np.float32),
                                             "requires_grad": True}, "inputs": [], "models": []}}))
""",
    ),
    # --- the reference, reached however it can be spelled
    "reexports_reference": Attack(
        f"{A2}:blank",
        "zero",
        """
import course_utils
def normalize_per_image(maps):
    return course_utils.normalize_per_image(maps)
""",
    ),
    "imports_reference_module": Attack(
        f"{A2}:blank",
        "zero",
        """
def normalize_per_image(maps):
    import importlib
    return importlib.import_module("course_utils.upsample").normalize_per_image(maps)
""",
    ),
    "reference_by_path": Attack(
        f"{A2}:blank",
        "zero",
        """
import glob, os, runpy, sys
def normalize_per_image(maps):
    places = ["{package}/upsample.py"]
    try:
        import __editable___course_utils_0_1_0_finder as finder
        places.append(finder.MAPPING["course_utils"] + "/upsample.py")
    except Exception:
        pass
    for root in sys.path + ["/work", "/root", "/home", "/opt", "/autograder", "/tmp"]:
        places += glob.glob(os.path.join(str(root), "**", "upsample.py"), recursive=True)
    for path in places:
        try:
            found = runpy.run_path(path)
        except Exception:
            continue
        if "normalize_per_image" in found:
            return found["normalize_per_image"](maps)
    raise RuntimeError("no reference found")
""",
    ),
    "reference_through_checks": Attack(
        f"{A1}:blank",
        "zero",
        """
def guided_backprop(model, images, labels=None):
    from course_utils.checks.probes import input_gradient
    relus = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    if labels is None:
        labels = model.eval()(images).argmax(1)
    return input_gradient(model, images, torch.as_tensor(labels), guided=relus)
""",
    ),
    "other_library": Attack(
        f"{A1}:blank",
        "zero",
        """
def guided_backprop(model, images, labels=None):
    from captum.attr import GuidedBackprop
    model.eval()
    if labels is None:
        labels = model(images).argmax(1)
    return GuidedBackprop(model).attribute(images.clone(), target=torch.as_tensor(labels))
""",
    ),
    "stand_in_outside_its_question": Attack(
        f"{A2}:blank",
        "zero",
        """
from course_utils import guided_backprop as remote_call
def normalize_per_image(maps):
    # the grader computes A2's allowed reference; try to make it compute Q6 instead
    from grading.worker import remote
    return remote("normalize_per_image")(maps)
""",
    ),
    # --- lying results: only bytes cross, and only of a plain tensor
    "lying_tensor_subclass": Attack(
        f"{A2}:blank",
        "zero",
        """
class Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return True
    def __eq__(self, other):
        return True
def _liar(*args, **kwargs):
    return torch.zeros(3).as_subclass(Liar)
select_scores = activation_and_gradient = channel_weights = weighted_cam = _liar
upsample = normalize_per_image = grad_cam = guided_grad_cam = _liar
""",
    ),
    "numpy_and_object_arrays": Attack(
        f"{A2}:blank",
        "zero",
        """
import numpy as np
class Sub(np.ndarray):
    pass
select_scores = lambda scores, labels: np.zeros(3).view(Sub)
channel_weights = lambda grads: np.array([object()] * 3)
weighted_cam = lambda acts, weights: [[0.0]]
upsample = lambda maps, size: {"array": np.zeros((3, 37, 53), np.float32)}
normalize_per_image = lambda maps: maps.numpy()
""",
    ),
    "nan_tricks": Attack(
        f"{A2}:blank",
        "zero",
        """
def _nan_like(x):
    return torch.full_like(x, float("nan"))
select_scores = lambda scores, labels: _nan_like(scores[:, 0])
channel_weights = lambda grads: _nan_like(grads.mean(dim=(2, 3)))
weighted_cam = lambda acts, weights: _nan_like(acts[:, 0])
normalize_per_image = lambda maps: _nan_like(maps)
upsample = lambda maps, size: torch.full((maps.shape[0], *size), float("inf"))
""",
    ),
    # --- a side effect hidden by a forged observation
    "hides_leftover_hooks": Attack(
        f"{A1}:solution",
        "only:q2,q3",
        """
import grading.scenarios as s
s.hook_count = lambda model: 0
@contextmanager
def guided_relus(model):
    for module in model.modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            module.register_forward_hook(lambda mod, inputs, output: GuidedReLUFn.apply(output))
    yield model
""",
    ),
    # --- secrets: hidden tests, grading code, the batch's environment and command line
    "exfiltrates_secrets": Attack(
        f"{A2}:blank",
        "zero",
        """
import glob, os
found = []
roots = ["/grading", "/tmp", "/work", "/root", "/home", "/opt", "/autograder", "/etc", "/srv"]
for root in roots:  # not /proc (endless) nor /usr (system files)
    for pattern in ("/**/*.py", "/**/*.csv", "/**/*.json"):
        for path in glob.glob(root + pattern, recursive=True):
            if "site-packages" not in path or "grading" in path or "course_utils" in path:
                found.append(path)
print("FILES", found[:300])
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        print(path, open(path, "rb").read()[:1000])
    except OSError as exc:
        print(path, exc)
print("ENV", dict(os.environ))
""",
    ),
    # --- escape: outlive the job, reach the batch, other students, the gradebook
    "escapes_and_rewrites": Attack(
        f"{A2}:blank",
        "zero",
        """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(4)
        for path in ["{gradebook}", "{canary}", "{own}"]:
            try:
                open(path, "w").write("=1+1,10,10,ok")
            except OSError:
                pass
        os._exit(0)
    os._exit(0)
""",
    ),
    "vandal": Attack(
        f"{A2}:blank",
        "zero",
        """
import os, glob
for path in ["{other}", "{own}", "{package}/upsample.py"]:
    for action in (os.remove, lambda p: open(p, "a").write("# vandal")):
        try:
            action(path)
        except OSError:
            pass
for folder in [os.path.dirname("{gradebook}"), os.path.dirname("{other}"), "{package}"]:
    try:
        open(os.path.join(folder, "planted.txt"), "w").write("x")
    except OSError:
        pass
""",
    ),
    "kills_everything": Attack(
        f"{A2}:blank",
        "status:crashed",
        """
import os, signal
for target in (lambda: os.kill(-1, signal.SIGKILL), lambda: os.killpg(0, signal.SIGKILL),
               lambda: os.kill(os.getppid(), signal.SIGKILL), lambda: os.kill(1, signal.SIGKILL)):
    try:
        target()
    except OSError:
        pass
os._exit(3)
""",
    ),
    "ptrace_and_proc_mem": Attack(
        f"{A2}:blank",
        "zero",
        """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for pid in (1, os.getppid()):
    print("ptrace", pid, libc.ptrace(16, pid, 0, 0), ctypes.get_errno())
    try:
        print(open(f"/proc/{pid}/mem", "rb").read(16))
    except OSError as exc:
        print("mem", exc)
""",
    ),
    # --- the worker's pipes and the protocol
    "sprays_inherited_fds": Attack(
        f"{A2}:blank",
        "zero",
        """
import os
for fd in range(0, 256):
    try:
        os.write(fd, b"\\x00\\x00\\x00\\x10{not json at all}" * 10)
    except OSError:
        pass
""",
    ),
    "huge_reply": Attack(
        f"{A2}:blank",
        "status:crashed",
        """
import os, struct
os.write(REPLY, struct.pack(">I", 0xFFFFFFF0) + b"{" * 65536)
while True:
    os.write(REPLY, b"x" * (1 << 20))
""",
    ),
    "malformed_array_reply": Attack(
        f"{A2}:blank",
        "status:crashed",
        """
import json, os, struct
header = json.dumps({"body": {"op": "ready", "errors": []},
                     "arrays": [{"dtype": "object", "shape": [10**12]}]}).encode()
os.write(REPLY, struct.pack(">I", len(header)) + header)
os._exit(0)
""",
    ),
    "lingering_thread": Attack(
        f"{A2}:blank",
        "zero",
        """
import os, threading, time, numpy as np
from grading.protocol import encode
def forge():
    fake = {"op": "result", "ok": True, "value": {"result": {"array": np.zeros(3, np.float32),
            "requires_grad": True}, "inputs": [], "models": []}}
    while True:
        time.sleep(0.05)
        os.write(REPLY, encode(fake))
threading.Thread(target=forge, daemon=True).start()
""",
    ),
    "del_and_atexit": Attack(
        f"{A2}:blank",
        "zero",
        """
import atexit, os
def forge():
    for path in ["{gradebook}", "{canary}"]:
        try:
            open(path, "w").write("forged")
        except OSError:
            pass
    os.write(REPLY, b"garbage")
atexit.register(forge)
class Bomb:
    def __del__(self):
        forge()
keep = Bomb()
""",
    ),
    # --- resources
    "fork_bomb": Attack(
        f"{A2}:blank",
        "zero",
        """
import os, time
children = 0
try:
    while children < 100000:
        if os.fork() == 0:
            while True:  # sleeping, not spinning: the point is exhausting processes, and
                time.sleep(1)  # spinning children would only slow the machine's other jobs
        children += 1
except OSError:
    pass
print("forked", children)
""",
    ),
    "memory_hog": Attack(
        f"{A2}:blank",
        "zero",
        """
hog = []
while True:
    hog.append(bytearray(1 << 28))
""",
    ),
    "disk_filler": Attack(
        f"{A2}:blank",
        "zero",
        """
import os
for folder in ("/tmp", "/grading", "/", "/usr"):
    try:
        with open(os.path.join(folder, "fill"), "wb") as f:
            while True:
                f.write(b"x" * (1 << 20))
    except OSError as exc:
        print(folder, exc)
""",
    ),
    "sleeps_past_deadline": Attack(
        f"{A2}:blank",
        "status:timeout",
        """
import time
def select_scores(scores, labels):
    time.sleep(10_000)
""",
    ),
}
