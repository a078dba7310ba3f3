"""private.py on real files: what slurm-gpu creates is 0700 (directories) or 0600 (files) whatever
the umask, and before it resumes from a checkpoint (a pickle: loading one runs the code inside it)
it refuses every path someone else could have written: a symbolic link, a path owned by another
account, one writable by group or others, or anything that is not a file or directory.

Another owner is simulated with the `uid=` parameter (the uid the code takes as "you"), so that
these tests also pass when not run as root; the few cases that need a really foreign owner use
os.chown and run only as root."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from snakemake_executor_plugin_slurm_gpu import checkpoints
from snakemake_executor_plugin_slurm_gpu.private import (
    UntrustedPath,
    check_checkpoint_dir,
    check_checkpoint_file,
    make_private_dir,
    tighten_own_dir,
    write_private,
)
from test_checkpoints import make_zip, set_age

EUID = os.geteuid()
OTHER_UID = EUID + 12345  # as uid=: every path these tests create is then someone else's
NOBODY = 65534            # a real foreign owner, for os.chown (root only)
as_root_only = pytest.mark.skipif(EUID != 0, reason="only root can give a path to another account")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def assert_refused(excinfo: pytest.ExceptionInfo[UntrustedPath], path: Path, *fragments: str) -> None:
    """The error names the path it refused, says why, and tells the user what to do."""
    error = excinfo.value
    assert error.path == path
    message = str(error)
    assert message.startswith(f"{path} ")
    assert "HINT:" in message and error.fix
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture(params=[0o000, 0o077, 0o277], ids=["umask-000", "umask-077", "umask-277"])
def umask(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    """Runs the test under a lax umask, a strict one, and one that even strips the owner's write
    bit (only there does the explicit chmod after creating matter). tmp_path is made first, under
    the usual umask."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """An existing directory of the user's, not private: make_private_dir takes it as it is."""
    path = tmp_path / "base"
    path.mkdir()
    os.chmod(path, 0o755)
    return path


# ---------------------------------------------------------------- make_private_dir

def test_make_private_dir_creates_every_missing_level_0700_whatever_the_umask(umask: int, base: Path) -> None:
    target = base / "a" / "b" / "c"
    assert make_private_dir(target, base) == target
    for level in (base / "a", base / "a" / "b", target):
        assert stat.S_ISDIR(os.lstat(level).st_mode)
        assert mode_of(level) == 0o700, f"{level} under umask {umask:03o}"
    assert mode_of(base) == 0o755, "the base is taken as it is"


def test_make_private_dir_tightens_an_existing_directory_of_ours(base: Path) -> None:
    (base / "a").mkdir()
    os.chmod(base / "a", 0o755)
    (base / "a" / "keep.txt").write_text("mine")
    make_private_dir(base / "a" / "b", base)
    assert mode_of(base / "a") == 0o700
    assert mode_of(base / "a" / "b") == 0o700
    assert (base / "a" / "keep.txt").read_text() == "mine"
    make_private_dir(base / "a" / "b", base)  # again: nothing to create, nothing refused
    assert mode_of(base / "a" / "b") == 0o700


def test_make_private_dir_of_the_base_itself_creates_and_changes_nothing(base: Path) -> None:
    assert make_private_dir(base, base) == base
    assert mode_of(base) == 0o755
    assert list(base.iterdir()) == []


@dataclass(frozen=True)
class Planted:
    """What someone could have left at base/'a' before slurm-gpu creates base/'a'/'b'."""

    make: Callable[[Path, Path], None]  # (component, tmp_path)
    uid: int | None
    fragments: tuple[str, ...]


def _link_to_our_private_dir(component: Path, tmp_path: Path) -> None:
    target = tmp_path / "private"
    target.mkdir(mode=0o700)
    component.symlink_to(target)


def _dir_with_mode(mode: int) -> Callable[[Path, Path], None]:
    def make(component: Path, tmp_path: Path) -> None:
        component.mkdir()
        os.chmod(component, mode)
    return make


PLANTED = {
    # a link, even to a good directory: it can be re-pointed after the check
    "symlink-to-our-private-dir": Planted(_link_to_our_private_dir, None, ("is a symbolic link", "HINT: slurm-gpu")),
    "group-writable": Planted(_dir_with_mode(0o770), None, ("writable by its group (mode 0770)", "chmod go-w")),
    "world-writable": Planted(_dir_with_mode(0o777), None, ("writable by its group and others (mode 0777)",)),
    "world-writable-sticky": Planted(_dir_with_mode(0o1777), None, ("writable by its group and others",)),
    "owned-by-another-uid": Planted(_dir_with_mode(0o700), OTHER_UID,
                                    (f"owned by uid {EUID}, not by you (uid {OTHER_UID})", "chown")),
    "regular-file": Planted(lambda component, _: component.write_text("x"), None, ("is not a directory",)),
}


@pytest.mark.parametrize("case", list(PLANTED.values()), ids=list(PLANTED))
def test_make_private_dir_refuses_an_untrusted_component(tmp_path: Path, base: Path, case: Planted) -> None:
    component = base / "a"
    case.make(component, tmp_path)
    before = os.lstat(component)
    with pytest.raises(UntrustedPath) as excinfo:
        make_private_dir(component / "b", base, uid=case.uid)
    assert_refused(excinfo, component, *case.fragments)
    after = os.lstat(component)
    # refused means untouched: no chmod of something that is not ours, nothing created through it
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)
    assert not os.path.lexists(component / "b")
    if component.is_symlink():
        assert list((tmp_path / "private").iterdir()) == []


def test_make_private_dir_refuses_an_untrusted_component_deep_down(base: Path) -> None:
    make_private_dir(base / "a", base)
    (base / "a" / "b").mkdir()
    os.chmod(base / "a" / "b", 0o775)
    with pytest.raises(UntrustedPath) as excinfo:
        make_private_dir(base / "a" / "b" / "c" / "d", base)
    assert_refused(excinfo, base / "a" / "b", "writable by its group")
    assert not (base / "a" / "b" / "c").exists()


# ---------------------------------------------------------------- write_private

@pytest.mark.parametrize(
    ("data", "on_disk"),
    [("#!/bin/bash\necho grüße\n", "#!/bin/bash\necho grüße\n".encode()),
     (b"\x00\xff binary\n", b"\x00\xff binary\n"),
     (b"x" * (3 << 20), b"x" * (3 << 20)),  # more than one write(2) may take
     ("", b"")],
    ids=["str", "bytes", "large", "empty"],
)
def test_write_private_writes_the_content_exactly_with_mode_0600(umask: int, tmp_path: Path, data: str | bytes,
                                                                 on_disk: bytes) -> None:
    path = tmp_path / "script.sh"
    assert write_private(path, data) == path
    assert path.read_bytes() == on_disk
    assert mode_of(path) == 0o600, f"under umask {umask:03o}"


def test_write_private_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "script.sh"
    path.write_text("already here")
    os.chmod(path, 0o644)
    with pytest.raises(FileExistsError):
        write_private(path, "new")
    assert path.read_text() == "already here"
    assert mode_of(path) == 0o644


@pytest.mark.parametrize("target_exists", [True, False], ids=["to-a-file", "dangling"])
def test_write_private_refuses_a_planted_symlink_and_leaves_its_target_alone(tmp_path: Path,
                                                                             target_exists: bool) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    if target_exists:
        victim.write_bytes(b"precious")
        os.chmod(victim, 0o644)
    link = tmp_path / "script.sh"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        write_private(link, "#!/bin/bash\nrm -rf ~\n")
    assert link.is_symlink()
    if target_exists:
        assert victim.read_bytes() == b"precious" and mode_of(victim) == 0o644
    else:
        assert not victim.exists(), "a dangling link must not create its target"


# ---------------------------------------------------------------- check_checkpoint_dir: the step directory

@pytest.fixture
def directory(tmp_path: Path) -> Path:
    """A healthy step directory as training leaves it: checkpoints of ours (0600 from
    atomic_output, 0644 from a plain torch.save), Lightning's last.ckpt link, a half-written temp
    file with a careless mode, a sharded checkpoint's directory, and a file that is no checkpoint."""
    path = tmp_path / "ck"
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    make_zip(path / "step-1.ckpt")
    os.chmod(path / "step-1.ckpt", 0o600)
    make_zip(path / "step-2.ckpt")
    os.chmod(path / "step-2.ckpt", 0o644)
    (path / "last.ckpt").symlink_to("step-2.ckpt")
    # never loaded (every scan skips '.tmp-*'), so its mode does not matter
    (path / ".tmp-step-3.ckpt").write_bytes(b"partial")
    os.chmod(path / ".tmp-step-3.ckpt", 0o666)
    (path / "sharded.ckpt").mkdir(mode=0o700)
    os.chmod(path / "sharded.ckpt", 0o700)
    (path / "notes.txt").write_text("not a checkpoint")
    os.chmod(path / "notes.txt", 0o666)
    return path


def test_a_missing_directory_passes(tmp_path: Path) -> None:
    assert check_checkpoint_dir(tmp_path / "absent") is None
    assert check_checkpoint_dir(tmp_path / "absent" / "step", base=tmp_path) is None


def test_a_healthy_step_directory_passes(directory: Path) -> None:
    check_checkpoint_dir(directory)
    check_checkpoint_dir(directory, uid=EUID)


def test_a_healthy_step_directory_passes_as_seen_through_find_resumable(directory: Path) -> None:
    set_age(directory / "step-1.ckpt", 20)
    set_age(directory / "step-2.ckpt", 10)
    assert checkpoints.find_resumable(directory) == directory / "step-2.ckpt"


@dataclass(frozen=True)
class Tampering:
    """Changes a healthy step directory; returns the path that must be refused."""

    apply: Callable[[Path, Path], Path]  # (directory, tmp_path) -> refused path
    fragments: tuple[str, ...]


def _chmod(name: str, mode: int) -> Callable[[Path, Path], Path]:
    def apply(directory: Path, tmp_path: Path) -> Path:
        path = directory / name if name else directory
        os.chmod(path, mode)
        return path
    return apply


def _link_outside(directory: Path, tmp_path: Path) -> Path:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_zip(elsewhere / "evil.ckpt")
    link = directory / "last.ckpt"
    link.unlink()
    link.symlink_to(elsewhere / "evil.ckpt")
    return link


def _link_into_a_subdirectory(directory: Path, tmp_path: Path) -> Path:
    (directory / "sub").mkdir(mode=0o700)
    make_zip(directory / "sub" / "inner.ckpt")
    link = directory / "last.ckpt"
    link.unlink()
    link.symlink_to("sub/inner.ckpt")
    return link


def _link_to_a_writable_sibling(directory: Path, tmp_path: Path) -> Path:
    # the sibling is no '.ckpt' and so is not checked itself: the link's target must be
    weights = directory / "weights.bin"
    make_zip(weights)
    os.chmod(weights, 0o666)
    link = directory / "last.ckpt"
    link.unlink()
    link.symlink_to("weights.bin")
    return link


def _fifo(directory: Path, tmp_path: Path) -> Path:
    os.mkfifo(directory / "x.ckpt")
    return directory / "x.ckpt"


TAMPERINGS = {
    "directory-group-writable": Tampering(_chmod("", 0o770), ("writable by its group (mode 0770)",)),
    "directory-world-writable": Tampering(_chmod("", 0o707), ("writable by others (mode 0707)",)),
    "ckpt-group-writable": Tampering(_chmod("step-1.ckpt", 0o660), ("writable by its group (mode 0660)",)),
    "ckpt-world-writable": Tampering(_chmod("step-2.ckpt", 0o646), ("writable by others (mode 0646)",)),
    "sharded-ckpt-directory-group-writable": Tampering(_chmod("sharded.ckpt", 0o770), ("writable by its group",)),
    "ckpt-link-leading-outside": Tampering(_link_outside, ("is a symbolic link to", "outside the step's checkpoint")),
    "ckpt-link-into-a-subdirectory": Tampering(_link_into_a_subdirectory, ("outside the step's checkpoint",)),
    "ckpt-link-to-a-writable-sibling": Tampering(_link_to_a_writable_sibling,
                                                 ("writable by its group and others (mode 0666)",)),
    "fifo": Tampering(_fifo, ("is neither a regular file nor a directory",)),
}


@pytest.mark.parametrize("case", list(TAMPERINGS.values()), ids=list(TAMPERINGS))
def test_a_tampered_step_directory_is_refused(directory: Path, tmp_path: Path, case: Tampering) -> None:
    refused = case.apply(directory, tmp_path)
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(directory)
    assert_refused(excinfo, refused, *case.fragments)


def test_a_link_leading_outside_is_named_with_its_target(directory: Path, tmp_path: Path) -> None:
    link = _link_outside(directory, tmp_path)
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(directory)
    message = str(excinfo.value)
    assert str(link) in message
    assert str(real(tmp_path / "elsewhere" / "evil.ckpt")) in message
    assert f"copy it into {real(directory)}" in message


def test_the_step_directory_as_a_symlink_is_refused(directory: Path, tmp_path: Path) -> None:
    # even a link to a healthy directory of ours: whoever can re-point it chooses what is loaded
    link = tmp_path / "ck-link"
    link.symlink_to(directory)
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(link)
    assert_refused(excinfo, link, f"is a symbolic link (to {directory})", "checkpoint-root")


def test_a_regular_file_where_the_step_directory_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ck").write_text("x")
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(tmp_path / "ck")
    assert_refused(excinfo, tmp_path / "ck", "is not a directory")


def test_a_ckpt_of_another_uid_is_refused(directory: Path) -> None:
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_file(directory / "step-1.ckpt", directory, uid=OTHER_UID)
    assert_refused(excinfo, directory / "step-1.ckpt", f"is owned by uid {EUID}, not by you (uid {OTHER_UID})")
    # through the directory check the directory itself, also not OTHER_UID's, is refused first
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(directory, uid=OTHER_UID)
    assert_refused(excinfo, directory, "is owned by uid")


def test_a_link_to_a_sibling_of_another_uid_is_refused(directory: Path) -> None:
    # the owner that counts is the target's: the link itself is always the linker's
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_file(directory / "last.ckpt", directory, uid=OTHER_UID)
    assert_refused(excinfo, directory / "last.ckpt", f"owned by uid {EUID}")


@as_root_only
def test_a_ckpt_really_owned_by_another_account_is_refused(directory: Path) -> None:
    os.chown(directory / "step-1.ckpt", NOBODY, -1)
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(directory)
    assert_refused(excinfo, directory / "step-1.ckpt", f"is owned by uid {NOBODY}, not by you (uid {EUID})")


@pytest.mark.parametrize(("link_name", "target"), [("last.ckpt", "gone.ckpt"), ("loop.ckpt", "loop.ckpt")],
                         ids=["dangling", "loop"])
def test_a_broken_ckpt_link_inside_the_directory_is_ignored_not_a_crash(directory: Path, link_name: str,
                                                                        target: str) -> None:
    # e.g. the user removed the checkpoints by hand and left Lightning's last.ckpt behind: there is
    # nothing to load behind the link, so nothing to distrust either
    (directory / link_name).unlink(missing_ok=True)
    (directory / link_name).symlink_to(target)
    set_age(directory / "step-1.ckpt", 20)
    set_age(directory / "step-2.ckpt", 10)
    assert checkpoints.find_resumable(directory) == directory / "step-2.ckpt"


# ---------------------------------------------------------------- check_checkpoint_dir with base=

@dataclass(frozen=True)
class Tree:
    base: Path  # checkpoint-root: may be a scratch area
    rule: Path
    step: Path


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    base = tmp_path / "ckroot"
    base.mkdir()
    os.chmod(base, 0o755)
    step = make_private_dir(base / "train" / "all", base)
    make_zip(step / "step-1.ckpt")
    return Tree(base, base / "train", step)


def test_a_healthy_tree_passes(tree: Tree) -> None:
    check_checkpoint_dir(tree.step, base=tree.base)


def test_a_group_writable_intermediate_directory_is_refused(tree: Tree) -> None:
    os.chmod(tree.rule, 0o775)
    # without base= only the step directory is looked at: that is what base= adds
    check_checkpoint_dir(tree.step)
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(tree.step, base=tree.base)
    assert_refused(excinfo, tree.rule, "writable by its group (mode 0775)")


def test_a_symlinked_intermediate_directory_is_refused(tree: Tree, tmp_path: Path) -> None:
    moved = tmp_path / "real-train"
    os.rename(tree.rule, moved)
    tree.rule.symlink_to(moved)  # a real directory of ours, reached through a link
    check_checkpoint_dir(tree.step)
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(tree.step, base=tree.base)
    assert_refused(excinfo, tree.rule, "is a symbolic link")


def test_the_step_directory_below_base_is_checked_too(tree: Tree) -> None:
    os.chmod(tree.step, 0o770)
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(tree.step, base=tree.base)
    assert_refused(excinfo, tree.step, "writable by its group")


def test_the_base_may_be_a_symlink_to_a_real_directory_of_ours(tree: Tree, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch-link"
    scratch.symlink_to(tree.base)
    check_checkpoint_dir(scratch / "train" / "all", base=scratch)
    # only as the base: below the base, the same link is refused
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(scratch / "train" / "all", base=tmp_path)
    assert_refused(excinfo, scratch, "is a symbolic link")


@pytest.mark.parametrize(
    ("mode", "refused"),
    [pytest.param(mode, refused, id=f"{mode:04o}-{'refused' if refused else 'accepted'}")
     for mode, refused in [(0o755, False), (0o700, False), (0o1777, False), (0o1775, False), (0o777, True),
                           (0o775, True), (0o757, True)]],
)
def test_a_writable_base_is_accepted_only_with_the_sticky_bit(tree: Tree, mode: int, refused: bool) -> None:
    # sticky, like /tmp: others may add entries but cannot rename or replace ours
    os.chmod(tree.base, mode)
    if not refused:
        check_checkpoint_dir(tree.step, base=tree.base)
        return
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(tree.step, base=tree.base)
    assert_refused(excinfo, tree.base, f"(mode {mode:04o}) and has no sticky bit", f"chmod go-w {tree.base}")


def test_a_base_of_another_non_root_account_is_refused(tree: Tree) -> None:
    if EUID == 0:
        # root's own base would be trusted as root's: give it to a real other account instead
        os.chown(tree.base, NOBODY, -1)
        uid, owner = None, NOBODY
    else:
        # the base is the real euid's, which for uid=OTHER_UID is neither "you" nor root
        uid, owner = OTHER_UID, EUID
    you = EUID if uid is None else uid
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(tree.step, base=tree.base, uid=uid)
    assert_refused(excinfo, tree.base, f"is owned by uid {owner}, not by you (uid {you}) or root",
                   "checkpoint-root")


@as_root_only
def test_a_root_owned_base_is_accepted_for_another_user(tree: Tree) -> None:
    # a site's scratch root (root-owned) with the user's own directories below it
    for path in (tree.rule, tree.step, tree.step / "step-1.ckpt"):
        os.chown(path, OTHER_UID, -1)
    check_checkpoint_dir(tree.step, base=tree.base, uid=OTHER_UID)
    # and below the base, root's ownership is no excuse
    os.chown(tree.rule, 0, -1)
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(tree.step, base=tree.base, uid=OTHER_UID)
    assert_refused(excinfo, tree.rule, f"is owned by uid 0, not by you (uid {OTHER_UID})")


# ---------------------------------------------------------------- find_resumable refuses, never falls back

@pytest.fixture
def resumable(tmp_path: Path) -> Path:
    """A step directory with an older and a newer valid checkpoint: either would do for a resume."""
    path = tmp_path / "ck"
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    set_age(make_zip(path / "step-1.ckpt"), 20)
    set_age(make_zip(path / "step-2.ckpt"), 10)
    return path


def test_find_resumable_refuses_a_group_writable_directory(resumable: Path) -> None:
    os.chmod(resumable, 0o770)
    with pytest.raises(UntrustedPath) as excinfo:
        checkpoints.find_resumable(resumable)
    assert_refused(excinfo, resumable, "writable by its group", "refuses to resume",
                   f"chmod go-w {resumable}")
    # following the HINT makes it resumable again, from the newest
    os.chmod(resumable, 0o700)
    assert checkpoints.find_resumable(resumable) == resumable / "step-2.ckpt"


def test_find_resumable_refuses_a_link_leading_outside_rather_than_fall_back(resumable: Path,
                                                                            tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    set_age(make_zip(elsewhere / "evil.ckpt"), 0)
    (resumable / "last.ckpt").symlink_to(elsewhere / "evil.ckpt")
    with pytest.raises(UntrustedPath) as excinfo:
        checkpoints.find_resumable(resumable)
    assert_refused(excinfo, resumable / "last.ckpt", "outside the step's checkpoint directory",
                   "refuses to resume")


def test_find_resumable_refuses_an_untrusted_older_file_rather_than_skip_it(resumable: Path) -> None:
    # the untrusted file is not even the one that would be picked: still no resume from the rest
    os.chmod(resumable / "step-1.ckpt", 0o666)
    with pytest.raises(UntrustedPath) as excinfo:
        checkpoints.find_resumable(resumable)
    assert_refused(excinfo, resumable / "step-1.ckpt", "refuses to resume")


def test_find_resumable_refuses_an_untrusted_file_that_does_not_even_verify(resumable: Path) -> None:
    # not silently skipped as damaged: someone else could write it, and that is worth a stop
    junk = resumable / "step-3.ckpt"
    junk.write_bytes(b"not a checkpoint")
    os.chmod(junk, 0o622)
    with pytest.raises(UntrustedPath) as excinfo:
        checkpoints.find_resumable(resumable)
    assert_refused(excinfo, junk, "writable by its group and others", "refuses to resume")


def test_an_unsafe_base_is_refused_before_the_first_run_too(tree: Tree) -> None:
    # the step directory does not exist yet, but it is about to be made in a base anyone can rename
    os.chmod(tree.base, 0o777)
    with pytest.raises(UntrustedPath) as excinfo:
        check_checkpoint_dir(tree.base / "train" / "new-step", base=tree.base)
    assert_refused(excinfo, tree.base, "has no sticky bit")
    check_checkpoint_dir(tree.base / "train" / "new-step")  # without base=: nothing there, nothing to check


@pytest.mark.parametrize(("mode", "after"), [(0o777, 0o755), (0o775, 0o755), (0o757, 0o755), (0o755, 0o755),
                                             (0o700, 0o700), (0o1777, 0o1777)])
def test_tighten_own_dir_removes_only_group_and_other_write_bits(tmp_path: Path, mode: int, after: int) -> None:
    target = tmp_path / "dot-snakemake"
    target.mkdir()
    os.chmod(target, mode)
    changed = tighten_own_dir(target)
    assert stat.S_IMODE(target.stat().st_mode) == after
    assert changed == (mode if after != mode else None)


def test_tighten_own_dir_leaves_links_and_other_accounts_alone(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    os.chmod(target, 0o777)
    assert tighten_own_dir(target, uid=EUID + 12345) is None
    link = tmp_path / "link"
    link.symlink_to(target)
    assert tighten_own_dir(link) is None
    assert stat.S_IMODE(target.stat().st_mode) == 0o777
