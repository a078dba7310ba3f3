"""Files only the user can write: how slurm-gpu creates its own (directories 0700, files 0600,
whatever the umask), and the checks it makes before trusting a directory or checkpoint that someone
else might have written.

Why: a Lightning checkpoint is a pickle, so loading one runs whatever code it carries, and a batch
script runs as the user. On a shared cluster, a file or directory that another account can write,
or a symbolic link that leads out of the step's directory, is a way into the user's account.

Torch-free: used by the executor on the submit host and by the job side before it resumes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .contract import CHECKPOINT_SUFFIX, TEMP_PREFIX

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class UntrustedPath(RuntimeError):
    """A path slurm-gpu will not use: it could have been written by someone else."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path, self.problem, self.fix = Path(path), problem, fix
        super().__init__(f"{path} {problem}. HINT: {fix}")


def _uid(uid: int | None) -> int:
    return os.geteuid() if uid is None else uid


def _owner_problem(path: Path, st: os.stat_result, uid: int) -> UntrustedPath | None:
    """Owned by someone else, or writable by group or others: None if neither."""
    if st.st_uid != uid:
        return UntrustedPath(path, f"is owned by uid {st.st_uid}, not by you (uid {uid})",
                             f"if you trust it, `chown` it to yourself; otherwise move it out of the way "
                             f"(mv {path} {path}.suspect) and run again")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        who = " and ".join(w for w, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit)
        return UntrustedPath(path, f"is writable by {who} (mode {mode:04o}), so someone else could have "
                                   "replaced what is in it",
                             f"if you trust its contents, run `chmod go-w {path}`; otherwise move it out of "
                             f"the way (mv {path} {path}.suspect) and run again")
    return None


# ---------------------------------------------------------------- creating

def make_private_dir(path: str | Path, base: str | Path, *, uid: int | None = None) -> Path:
    """Create every missing directory below `base` (an existing directory, taken as it is) down to
    `path` with mode 0700, and tighten existing ones of ours to 0700.

    Raises UntrustedPath for a directory on the way that is a symbolic link, is not ours or is
    writable by group or others: files created below it could be swapped by whoever else can write.
    """
    path, base = Path(path), Path(base)
    uid = _uid(uid)
    current = base
    for part in path.relative_to(base).parts:
        current = current / part
        try:
            os.mkdir(current, PRIVATE_DIR_MODE)
            os.chmod(current, PRIVATE_DIR_MODE)  # exactly 0700, whatever the umask left
            continue
        except FileExistsError:
            pass
        st = _check_directory(current, uid)
        if stat.S_IMODE(st.st_mode) != PRIVATE_DIR_MODE:
            os.chmod(current, PRIVATE_DIR_MODE)
    return path


def tighten_own_dir(path: str | Path, *, uid: int | None = None) -> int | None:
    """Remove group and other write permission from a directory of ours that has it without the
    sticky bit; returns the old mode if it changed anything, else None. Someone else's directory,
    or a link, is left alone: the checks refuse what is unsafe about it."""
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != _uid(uid) or not mode & 0o022 or mode & stat.S_ISVTX:
        return None
    os.chmod(path, mode & ~0o022)
    return mode


def write_private(path: str | Path, data: str | bytes) -> Path:
    """Create a new file with mode 0600 (whatever the umask) and write `data`. Never follows a
    symbolic link and never reuses an existing file: a name someone planted makes this fail."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        payload = data.encode() if isinstance(data, str) else data
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return path


# ---------------------------------------------------------------- trusting checkpoints

def _check_directory(path: Path, uid: int) -> os.stat_result:
    """A real directory of ours that nobody else can write into (UntrustedPath otherwise)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedPath(path, f"is a symbolic link (to {os.readlink(path)}), so its contents can be "
                                  "anybody's",
                            f"slurm-gpu keeps its files in real directories: remove the link ({path}) and run "
                            "again, or point the setting checkpoint-root at a real directory of yours")
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedPath(path, "is not a directory", f"remove or rename {path}")
    problem = _owner_problem(path, st, uid)
    if problem is not None:
        raise problem
    return st


def _check_base(path: Path, uid: int) -> None:
    """The directory the step directories live in may be a scratch area: a link to it is fine, and
    so is a root-owned or sticky one (others cannot replace what is ours in it), not more."""
    st = os.stat(path)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (uid, 0):
        raise UntrustedPath(path, f"is owned by uid {st.st_uid}, not by you (uid {uid}) or root",
                            "set checkpoint-root to a directory of your own")
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise UntrustedPath(path, f"is writable by others (mode {mode:04o}) and has no sticky bit, so anyone "
                                  "could replace the step directories in it",
                            f"run `chmod go-w {path}`, or set checkpoint-root to a directory of your own")


def check_checkpoint_file(path: str | Path, directory: str | Path, *, uid: int | None = None) -> None:
    """A checkpoint may be loaded only if it is a file (or a sharded checkpoint's directory) of
    ours that nobody else can write; a symbolic link is followed only when it stays inside the
    step's checkpoint directory."""
    path, uid = Path(path), _uid(uid)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        target = Path(os.path.realpath(path))
        home = Path(os.path.realpath(directory))
        if target.parent != home:
            raise UntrustedPath(path, f"is a symbolic link to {target}, outside the step's checkpoint directory "
                                      f"{home}", f"if that file is yours and you want to resume from it, copy it "
                                                 f"into {home}; otherwise remove the link ({path})")
        try:
            st = os.stat(path)
        except OSError:
            return  # dangling or a loop (a last.ckpt whose file was deleted): nothing to load, nothing to trust
    # a directory: a sharded checkpoint (FSDP, DeepSpeed) is one; its owner and mode count the same
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise UntrustedPath(path, "is neither a regular file nor a directory", f"remove {path}")
    problem = _owner_problem(path, st, uid)
    if problem is not None:
        raise problem


def check_checkpoint_dir(directory: str | Path, *, base: str | Path | None = None,
                         uid: int | None = None) -> None:
    """Refuse (UntrustedPath) a checkpoint directory that someone else could have filled.

    Checked: the directory and, when `base` is given, every directory below `base` down to it (no
    links, ours, not writable by group or others) and `base` itself leniently (see _check_base);
    then every checkpoint file in it (check_checkpoint_file). A directory that does not exist yet
    passes (there is nothing to resume), once its base has passed.
    """
    directory, uid = Path(directory), _uid(uid)
    if base is not None:
        _check_base(Path(base), uid)  # also before the first run: the step directory will be made in it
    if not os.path.lexists(directory):
        return
    chain = [directory]
    if base is not None:
        base = Path(base)
        current, chain = base, []
        for part in directory.relative_to(base).parts:
            current = current / part
            chain.append(current)
    for path in chain:
        _check_directory(path, uid)
    for entry in os.scandir(directory):
        # half-written files ('.tmp-'): never loaded, so never checked
        if entry.name.endswith(CHECKPOINT_SUFFIX) and not entry.name.startswith(TEMP_PREFIX):
            check_checkpoint_file(entry.path, directory, uid=uid)
