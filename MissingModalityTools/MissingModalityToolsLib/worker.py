"""The ``medmodels`` worker process: start it, read its lines, cancel it.

Inference runs outside Slicer's process so the panel stays responsive, a
crash in torch cannot take Slicer down, and cancel can simply kill it. Two
reader threads move stdout and stderr lines into a queue; the caller drains
the queue with ``poll()`` from its own thread (Slicer's main thread, through
a QTimer), so callbacks never run on a reader thread.

On Linux the worker runs under a memory limit (``default_memory_limit``: 80 %
of the machine's memory, set with ``resource.prlimit`` once it has started),
so a run that asks for too much fails with a message in words instead of
taking the machine (and Slicer) down with it. macOS and Windows have no way
to set it safely from Slicer's multi-threaded process, so there is none.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class WorkerError(RuntimeError):
    """The worker failed; the message says why (its ERROR: line) and what to do."""


class RunCancelled(RuntimeError):
    """The user cancelled the run; nothing was added to the scene."""


@dataclass(frozen=True)
class WorkerEvent:
    """One line from the worker.

    Attributes:
        kind: "progress" (a PROGRESS line), "log" (other stdout), "stderr".
        text: the message (without the PROGRESS prefix and fraction).
        fraction: 0..1 for progress events, else None.
    """

    kind: str
    text: str
    fraction: float | None = None


def parse_line(line: str, stream: str) -> WorkerEvent:
    """Turn one output line into an event; ``PROGRESS <fraction> <message>`` is progress."""
    line = line.rstrip("\r\n")
    if stream == "stdout" and line.startswith("PROGRESS "):
        parts = line.split(" ", 2)
        try:
            fraction = min(max(float(parts[1]), 0.0), 1.0)
            return WorkerEvent("progress", parts[2] if len(parts) > 2 else "", fraction)
        except (IndexError, ValueError):
            pass  # not a well-formed progress line: show it as it is
    return WorkerEvent("log" if stream == "stdout" else "stderr", line)


#: Share of the machine's memory a worker may use.
MEMORY_SHARE = 0.8
#: What a worker that ran out of memory prints (Python, numpy, PyTorch), and the signal the kernel's
#: out-of-memory killer sends.
_MEMORY_WORDS = ("MemoryError", "out of memory", "can't allocate memory", "Cannot allocate memory")


def default_memory_limit() -> int | None:
    """``MEMORY_SHARE`` of the machine's physical memory in bytes, or None where it is unknown."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * MEMORY_SHARE)
    except (AttributeError, ValueError, OSError):
        return None


def memory_limit_resource():
    """The ``resource`` limit that caps a worker's memory on this system, or None (no cap here).

    Linux only: the cap is set on the running child with ``resource.prlimit``
    (``limit_memory``), never with ``preexec_fn``, which CPython documents as
    unsafe in a process with threads (Slicer has many): the child can
    deadlock between fork and exec. macOS and Windows have no ``prlimit``, so
    there the worker runs without a cap. ``RLIMIT_DATA`` (the private
    writable memory, i.e. what really uses RAM), not ``RLIMIT_AS``, which
    counts the large address ranges CUDA reserves without using them and
    would make every GPU run fail. Python raises ``MemoryError`` when an
    allocation passes the cap.
    """
    if not sys.platform.startswith("linux"):
        return None
    import resource

    return resource.RLIMIT_DATA if hasattr(resource, "prlimit") else None


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc), e.g. the real Python PythonSlicer's launcher starts."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def limit_memory(pid: int, limit_bytes: int | None) -> None:
    """Cap the memory of the running process ``pid`` and its children at ``limit_bytes`` (Linux; else nothing).

    Children started later inherit the cap; the ones already there (the
    launcher may have started its Python) get it here too.
    """
    which = memory_limit_resource()
    if not limit_bytes or which is None:
        return
    import resource

    for target in [pid, *_children(pid)]:
        try:
            soft, hard = resource.prlimit(target, which)
            cap = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
            resource.prlimit(target, which, (cap, hard))
        except (ProcessLookupError, PermissionError):
            pass  # already gone: nothing to cap


class WorkerProcess:
    """One run of the worker command.

    Args:
        command: executable and arguments.
        env: the whole environment of the process.
        cwd: working directory (a folder the run owns).
        memory_limit_bytes: the worker's memory cap (``limit_memory``);
            None = ``default_memory_limit()``, 0 = no cap.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None = None,
        memory_limit_bytes: int | None = None,
    ):
        self.memory_limit_bytes = default_memory_limit() if memory_limit_bytes is None else memory_limit_bytes
        self.command = [str(c) for c in command]
        self.env = dict(env)
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.cancelled = False
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        # The last stderr lines, kept for the error message of a crash.
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self.error_lines: list[str] = []
        self._exited_at: float | None = None

    def start(self) -> None:
        kwargs = {}
        if os.name == "nt":
            # Own process group (so taskkill /T finds the tree) and no console window.
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            # Own session = own process group: cancel kills the group, grandchildren included.
            kwargs["start_new_session"] = True
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        limit_memory(self.proc.pid, self.memory_limit_bytes)
        for stream_name in ("stdout", "stderr"):
            t = threading.Thread(target=self._read, args=(stream_name,), daemon=True)
            t.start()
            self._threads.append(t)

    def _read(self, stream_name: str) -> None:
        stream = getattr(self.proc, stream_name)
        for line in iter(stream.readline, ""):
            self._queue.put((stream_name, line))
        stream.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def poll(self) -> list[WorkerEvent]:
        """All lines that arrived since the last call, as events."""
        events = []
        while True:
            try:
                stream_name, line = self._queue.get_nowait()
            except queue.Empty:
                break
            event = parse_line(line, stream_name)
            if event.kind == "stderr":
                self.stderr_tail.append(event.text)
                if event.text.startswith("ERROR:"):
                    self.error_lines.append(event.text[len("ERROR:") :].strip())
            events.append(event)
        return events

    #: After the process exits, wait at most this long for its streams to close:
    #: a grandchild that inherited them (and outlived it) must not hang the run.
    STREAM_GRACE_SECONDS = 5.0

    def finished(self) -> bool:
        """True once the process has exited and its output is read (or the grace time is over)."""
        if self.proc is None or self.proc.poll() is None:
            return False
        if not any(t.is_alive() for t in self._threads):
            return True
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        return time.monotonic() - self._exited_at > self.STREAM_GRACE_SECONDS

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(self.STREAM_GRACE_SECONDS if timeout is None else timeout)
        return rc

    def cancel(self) -> None:
        """Kill the worker and everything it started; returns once it is gone."""
        self.cancelled = True
        if self.proc is None or self.proc.poll() is not None:
            return
        kill_process_tree(self.proc)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for t in self._threads:
            t.join(timeout=10)

    def ran_out_of_memory(self) -> bool:
        """True when the worker's output says it ran out of memory (a MemoryError, PyTorch's words)."""
        return any(word in line for line in self.stderr_tail for word in _MEMORY_WORDS)

    def failure_message(self) -> str:
        """What went wrong, for a run that exited non-zero."""
        rc = self.returncode
        if self.error_lines:
            reason = " ".join(self.error_lines)
        else:
            tail = [line for line in self.stderr_tail if line.strip()]
            reason = (
                ("it printed no ERROR line; the last output was: " + " | ".join(tail[-5:]))
                if tail
                else "it printed nothing on stderr"
            )
        if self.ran_out_of_memory():
            cap = f"{self.memory_limit_bytes / 2**30:.1f} GiB" if self.memory_limit_bytes else "the machine's memory"
            how = (
                f"ran out of memory (its limit is {cap}): the volumes are too large or too finely sampled for "
                "this machine. Close other programs, check the volumes' spacing, or use a machine with more memory. "
                "Details"
            )
        elif rc is not None and rc < 0:
            how = f"was killed by signal {-rc} (a crash, or the system ran out of memory)"
        else:
            how = f"stopped with exit code {rc}"
        return (
            f"The medmodels worker {how}: {reason}. Nothing was added to the scene. "
            "If the message does not say how to fix it, try the CPU device or fewer samples, "
            "and see the log for the full output."
        )


def kill_process_tree(proc: subprocess.Popen) -> None:
    """Kill a process and its descendants.

    Killing only the launched process is not enough: PythonSlicer is a
    launcher whose child is the real Python, and torch may start workers.
    """
    try:
        # Not in Slicer's Python (nor a requirement): used where the user installed it. Without it the
        # process group (POSIX) or taskkill /T (Windows) below still reach every descendant.
        import psutil

        try:
            parent = psutil.Process(proc.pid)
            for child in parent.children(recursive=True):
                child.kill()
        except psutil.NoSuchProcess:
            pass
    except ImportError:
        pass
    if os.name == "nt":
        subprocess.run(
            ["taskkill", "/F", "/T", "/PID", str(proc.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the session started with the process
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()


def default_python() -> str:
    """The Python that runs the worker: PythonSlicer inside Slicer, else this one.

    Inside Slicer ``sys.executable`` is the application, not a Python
    interpreter; PythonSlicer (on Slicer's PATH) is the interpreter with
    Slicer's packages (torch from the PyTorch extension among them).
    """
    import shutil

    try:
        import slicer

        in_slicer = hasattr(slicer, "app")
    except ImportError:
        in_slicer = False
    if in_slicer:
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable
