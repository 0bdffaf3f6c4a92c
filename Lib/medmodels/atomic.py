"""Atomic publication of files: write under a temporary name, then rename;
and output folders that one run claims and adds files to without replacing any.

``tempfile`` creates files readable by their owner only (mode 600) and folders
of mode 700; published outputs and bundled weights get the ordinary modes the
user's umask gives (usually 644 and 755), so other users and packagers can
read them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from medmodels.errors import InputError


def current_umask() -> int:
    """The process's umask. ``os.umask`` only reads it by setting it, so it is set back at once."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Give ``tmp`` the umask's default mode and rename it to ``dest``."""
    default = 0o777 if os.path.isdir(tmp) else 0o666
    os.chmod(tmp, default & ~current_umask())
    os.replace(tmp, dest)


#: How every temporary name (file or folder) an output is staged under starts; ``staging_prefix`` adds its writer.
STAGING_PREFIX = ".partial-"
#: ``.partial-<pid>@<host>@``: the writer of a staging name (``staging_prefix``).
_STAGING_OWNER = re.compile(re.escape(STAGING_PREFIX) + r"(\d+)@([^@/]*)@")


def _host_word() -> str:
    """This machine's name as a staging name holds it: quoted (no ``@`` or path separator in it), or a
    digest of it when long, so that a name stays well under the file system's limit."""
    host = socket.gethostname()
    quoted = quote(host, safe="")
    return quoted if len(quoted) <= 64 else hashlib.sha256(host.encode("utf-8")).hexdigest()[:32]


def staging_prefix() -> str:
    """The prefix of a temporary name this process stages an output under, ``.partial-<pid>@<host>@``:
    a name a killed process left can so be told from one a live writer is filling (``remove_stale_staging``)."""
    return f"{STAGING_PREFIX}{os.getpid()}@{_host_word()}@"


def _staging_owner(name: str) -> tuple[int | None, bool]:
    """``(pid, gone)`` of the process that made the staging name ``name``, by the lock's rule
    (``_process_gone``); a name without pid and host (an older version's) is never gone."""
    found = _STAGING_OWNER.match(name)
    if found is None:
        return None, False
    pid = int(found.group(1))
    return pid, _process_gone(pid, found.group(2) == _host_word())


def remove_stale_staging(folder: str | os.PathLike) -> list[str]:
    """Remove the staging files and folders (``.partial-*``) in ``folder`` that a process which no
    longer runs on this machine left (a run killed with SIGKILL, or a crash), each with a note on stderr.

    Only what is provably stale goes: a name recording its writer's pid and host (``staging_prefix``)
    whose process is gone. A live writer's, another machine's and an older version's (no pid) are
    kept. Published outputs never carry the prefix, so nothing a run finished is touched.

    Args:
        folder: the folder to clear (a missing one holds nothing).

    Returns:
        the names removed.
    """
    folder = Path(folder)
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith(STAGING_PREFIX))
    except OSError:
        return []
    removed = []
    for name in names:
        pid, gone = _staging_owner(name)
        if not gone:
            continue
        path = folder / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # another run cleared it at the same moment
        except OSError:
            continue  # not ours to remove (permissions): it stays, harmless, under its hidden name
        removed.append(name)
        print(
            f"note: removed '{path}', left by process {pid}, which is no longer running (a run that was killed): "
            "it held unpublished files only.",
            file=sys.stderr,
            flush=True,
        )
    return removed


def write_atomically(
    dest: str | os.PathLike,
    write: Callable[[str], None],
    suffix: str = "",
    publish_as: Callable[[str, Path], None] = publish,
) -> None:
    """``write(tmp)`` fills a temporary file beside ``dest``, which is then
    published as ``dest``: whole or absent, and no temporary file is left when
    ``write`` fails.

    Args:
        dest: the file to write.
        write: fills the temporary file whose path it is given.
        suffix: the temporary file's suffix (some writers choose the format by it).
        publish_as: ``publish_as(tmp, dest)`` moves it into place: ``publish`` (replaces
            ``dest``), or ``_publish_new_file`` (never replaces one: ``write_new_json``).
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=staging_prefix(), suffix=suffix, dir=dest.parent)
    os.close(fd)
    try:
        write(tmp)
        publish_as(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _json_writer(data, sort_keys: bool) -> Callable[[str], None]:
    """What fills a temporary file with ``data`` as indented UTF-8 JSON and a final newline."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=sort_keys)
            f.write("\n")

    return write


def write_json(dest: str | os.PathLike, data, sort_keys: bool = False) -> None:
    """``data`` as indented UTF-8 JSON at ``dest``, atomically (see ``write_atomically``)."""
    write_atomically(dest, _json_writer(data, sort_keys), ".json")


# -- output folders: claimed by one run, files added but never replaced -----------

#: The lock file a run holds in its output folder from before it computes until
#: its manifest is written.
LOCK_NAME = ".medmodels-run.lock"


def _process_gone(pid: int, on_this_machine: bool) -> bool:
    """Whether process ``pid`` no longer runs: the one rule by which a lock or a staging name is stale.
    A process of another machine (a shared folder), or one alive under another user, is never gone."""
    if pid <= 0 or not on_this_machine:
        return False  # another machine's process number says nothing about this one's processes
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        pass  # alive under another user, or a platform without signal 0
    return False


def _lock_owner(lock: Path) -> tuple[int | None, bool]:
    """``(pid, gone)`` of the run that wrote ``lock``: ``gone`` when that process no longer runs on
    this machine (a killed run). A lock from another machine (a shared folder) or unreadable is never gone."""
    try:
        fields = lock.read_text(encoding="ascii").split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return None, False
    return pid, _process_gone(pid, len(fields) == 1 or fields[1] == socket.gethostname())


def _lock_holder(lock: Path) -> str:
    """Who holds ``lock``, in words, for the message of a refused claim."""
    pid, gone = _lock_owner(lock)
    if pid is None:
        return "another run"
    return f"process {pid}, which is no longer running (a run that was killed)" if gone else f"process {pid}"


def _remove_stale_lock(lock: Path) -> bool:
    """Remove ``lock`` when the process that wrote it is gone, with a note on stderr; True if removed.

    A second lock file (``<lock>.break``, ``O_EXCL``) makes the check and the
    removal one step among runs started together: only one of them removes
    the stale lock, and none removes the fresh lock of a run that just took it.
    """
    pid, gone = _lock_owner(lock)
    if not gone:
        return False
    breaker = lock.with_name(lock.name + ".break")
    try:
        os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except OSError:
        return False  # another run is removing it at this moment
    try:
        if _lock_owner(lock) != (pid, True):  # taken meanwhile by a run that is alive
            return False
        lock.unlink()
    finally:
        breaker.unlink(missing_ok=True)
    print(
        f"note: removed the lock file '{lock}' left by process {pid}, which is no longer running (a run that was "
        "killed); files it left half-written were never published.",
        file=sys.stderr,
        flush=True,
    )
    return True


@contextmanager
def claimed_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` (created if missing) for one run; two runs cannot hold one folder.

    The claim is a lock file created with ``O_CREAT | O_EXCL``: of two runs
    started together, exactly one creates it, the other is refused at once,
    before it computes anything. The lock is removed when the block ends
    (also on an error); a lock left by a killed run (its process is gone) is
    removed with a note on stderr, and so are the staging files and folders
    that run left (``remove_stale_staging``).

    Args:
        folder: the output folder.

    Yields:
        the folder as a ``Path``.

    Raises:
        InputError: ``folder`` is a file, cannot be created or written, or is
            held by another run.
    """
    folder = Path(folder)
    lock = folder / LOCK_NAME
    if folder.exists() and not folder.is_dir():
        raise InputError(f"The output folder '{folder}' is a file: give a folder (--out is created if missing).")
    fd = _create_lock(folder, lock)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")  # the host: a pid means something only there
        remove_stale_staging(folder)  # _create_lock removed a killed run's lock; the staging it left goes too
        yield folder
    finally:
        try:
            lock.unlink()
        except FileNotFoundError:
            pass


def _create_lock(folder: Path, lock: Path) -> int:
    """Create ``lock`` in ``folder`` (made if missing) with ``O_EXCL`` and return its descriptor; the lock
    of a killed run is removed first (``_remove_stale_lock``). InputError when it is held or not writable."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(lock, flags, 0o644)
        except FileExistsError:
            if not _remove_stale_lock(lock):
                raise
            return os.open(lock, flags, 0o644)  # a run started at the same moment may still win it
    except FileExistsError:
        raise InputError(
            f"The output folder '{folder}' is in use by {_lock_holder(lock)} (lock file '{LOCK_NAME}'): wait "
            "for it to finish or choose another --out; delete the lock file only if no run is writing there."
        ) from None
    except OSError as err:
        raise InputError(
            f"Cannot write into the output folder '{folder}' ({err.strerror or err}): choose a writable --out."
        ) from None


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if missing and make sure a file can be written in it,
    before a command computes what it will write there.

    Raises:
        InputError: ``folder`` is a file, or cannot be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"The output folder '{folder}' is a file: give a folder (--out is created if missing).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InputError(
            f"Cannot write into the output folder '{folder}' ({err.strerror or err}): choose a writable --out."
        ) from None
    return folder


def existing(folder: str | os.PathLike, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that exist in ``folder`` (a dangling link counts: it would be replaced too)."""
    folder = Path(folder)
    return [n for n in names if (folder / n).exists() or (folder / n).is_symlink()]


def check_plain_name(name: str, what: str) -> str:
    """``name`` if it is one plain file or folder name, which cannot lead out of the folder it is made in.

    Args:
        name: a name a user gave that becomes part of a path (``--case``, ``--name``).
        what: how the command calls it, for the message (e.g. "case name (--case)").

    Raises:
        InputError: an empty name, ``.`` or ``..``, or one holding a path
            separator, a drive colon or a NUL character.
    """
    if name in ("", ".", "..") or any(c in name for c in "/\\:\0"):
        raise InputError(
            f"The {what} '{name}' is not a plain name: it would lead out of its folder. Give a name without "
            "'/', '\\', ':' or '..', and choose the folder with --out (or OUT_DIR) instead."
        )
    return name


#: The file a run writes last into its output folder: a folder without it holds an unfinished run.
MANIFEST = "manifest.json"
#: What to do about files in the way, unless a command says more precisely.
MOVE_THEM = "choose another output folder (--out), or move those files away"


def check_output_folder(out_dir: str | os.PathLike, names: Sequence[str], fix: str = MOVE_THEM) -> None:
    """Refuse an output folder that is a file or holds a file a command would write:
    the one rule of every command that writes (docs/architecture.md, output-folder rules).

    Args:
        out_dir: the folder the command writes into (it need not exist yet).
        names: the file (or folder) names the command will create there.
        fix: what the user can do instead, for the message (e.g. "give another --name").

    Raises:
        InputError: naming the files and the fix. A folder with a
            ``manifest.json`` "already holds a finished run".
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"The output folder '{out_dir}' is a file: give a folder (--out is created if missing).")
    clash = existing(out_dir, names)
    if not clash:
        return
    what = f"already holds a finished run ({MANIFEST}) and" if MANIFEST in clash else "already"
    raise InputError(
        f"'{out_dir}' {what} holds {', '.join(clash)}, which this command would write: {fix}. medmodels never "
        "replaces a file it did not write in the same run (inputs, your own files, an earlier run's outputs)."
    )


def publish_new(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move ``tmp`` to ``dest``, which must not exist: never replaces a file.

    A hard link is made and the temporary name removed, so the check and the
    move are one step (``os.link`` fails on an existing ``dest``). Where the
    file system has no hard links, the check comes just before the rename,
    which the folder's claim (``claimed_folder``) keeps safe from other runs.

    Raises:
        FileExistsError: ``dest`` exists.
    """
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network shares)
        if os.path.lexists(dest):
            raise FileExistsError(dest) from None
        os.replace(tmp, dest)
        return
    os.remove(tmp)


def _publish_new_file(tmp: str, dest: Path) -> None:
    """``publish``'s file mode, then ``publish_new``: a new file readable as ``publish`` leaves it."""
    os.chmod(tmp, 0o666 & ~current_umask())
    publish_new(tmp, dest)


def write_new_json(dest: str | os.PathLike, data, fix: str = MOVE_THEM) -> None:
    """``data`` as indented UTF-8 JSON at ``dest``, a new file: whole or absent
    (``write_atomically``), and never over an existing file, which is refused
    before anything is written and also when it appears meanwhile (``publish_new``).

    Args:
        dest: the file to write; its folder must exist.
        data: JSON-able data.
        fix: what the user can do when ``dest`` exists, for the message.

    Raises:
        InputError: ``dest`` exists (``check_output_folder``'s message, naming it and ``fix``).
    """
    dest = Path(dest)
    check_output_folder(dest.parent, [dest.name], fix)
    try:
        write_atomically(dest, _json_writer(data, False), ".json", _publish_new_file)
    except FileExistsError:  # made between the check and the publication
        check_output_folder(dest.parent, [dest.name], fix)
        raise
