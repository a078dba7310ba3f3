"""The checkpoint directory's lifecycle on real files: writes are all-or-nothing, damaged checkpoints
are recognised without unpickling, resume falls back past them, a changed step moves its old
directory aside intact, and cleanup removes only what its policy names."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

import hashlib

from snakemake_executor_plugin_slurm_gpu import checkpoints
from snakemake_executor_plugin_slurm_gpu.checkpoints import (
    PROVENANCE_FILE,
    CheckpointInfo,
    CleanupPolicy,
    VerifiedBy,
    atomic_output,
    atomic_write_bytes,
    cleanup_after_success,
    ensure_provenance,
    file_digests,
    find_resumable,
    manifest_path,
    newest_valid_checkpoint,
    provenance_digest,
    publish_directory,
    remove_checkpoint,
    remove_leftovers,
    verify_checkpoint,
    write_manifest,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def make_zip(path: Path, payload: bytes = b"x" * 4096) -> Path:
    """A stand-in for torch.save's output: a zip archive with stored members and CRCs."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", b"3\n")
    return path


def set_age(path: Path, seconds_ago: int) -> None:
    """Distinct mtimes without sleeping: larger `seconds_ago` is older."""
    t = 1_700_000_000 - seconds_ago
    os.utime(path, (t, t))


def truncate(path: Path, by_bytes: int = 7) -> None:
    os.truncate(path, path.stat().st_size - by_bytes)


def flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# ---------------------------------------------------------------- atomic writes

def test_atomic_write_bytes_writes_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"hello")
    atomic_write_bytes(target, b"world")
    assert target.read_bytes() == b"world"
    assert names(tmp_path) == {"a.bin"}


def test_atomic_output_yields_a_temp_path_in_the_same_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))  # must not be used
    target = tmp_path / "ckpts" / "a.ckpt"
    target.parent.mkdir()
    with atomic_output(target) as temporary:
        assert temporary.parent == target.parent
        assert temporary.name.startswith(".tmp-")
        assert not target.exists()
        temporary.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert names(target.parent) == {"a.ckpt"}
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("exception", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_atomic_output_is_all_or_nothing_when_the_writer_raises(tmp_path: Path, exception: BaseException) -> None:
    target = tmp_path / "a.ckpt"
    target.write_bytes(b"old complete checkpoint")
    with pytest.raises(type(exception)):
        with atomic_output(target) as temporary:
            temporary.write_bytes(b"half of the new")
            raise exception
    assert target.read_bytes() == b"old complete checkpoint"
    assert names(tmp_path) == {"a.ckpt"}


def test_atomic_output_failure_leaves_no_file_where_none_was(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "a.ckpt") as temporary:
            temporary.write_bytes(b"partial")
            raise RuntimeError
    assert names(tmp_path) == set()


# ---------------------------------------------------------------- manifests and verification

def test_manifest_records_size_sha256_step_and_utc_time(tmp_path: Path) -> None:
    ckpt = make_zip(tmp_path / "step-10.ckpt")
    written = write_manifest(ckpt, global_step=10)
    assert written == manifest_path(ckpt) == tmp_path / "step-10.ckpt.json"
    data = json.loads(written.read_text())
    assert data["size_bytes"] == ckpt.stat().st_size
    assert len(data["sha256"]) == 64
    assert data["global_step"] == 10
    assert datetime.fromisoformat(data["written_at"]).utcoffset().total_seconds() == 0


@pytest.mark.parametrize("step", [-1, 1.5, True, None])
def test_manifest_rejects_a_step_that_is_not_a_count(tmp_path: Path, step: object) -> None:
    ckpt = make_zip(tmp_path / "a.ckpt")
    with pytest.raises(ValueError, match="global_step"):
        write_manifest(ckpt, step)  # type: ignore[arg-type]


def test_manifest_verifies_an_intact_file_and_reports_its_step(tmp_path: Path) -> None:
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"not a zip, but recorded by its writer")
    write_manifest(ckpt, global_step=42)
    assert verify_checkpoint(ckpt) == CheckpointInfo(ckpt, ckpt.stat().st_size, 42, VerifiedBy.MANIFEST)


def test_manifest_catches_truncation(tmp_path: Path) -> None:
    ckpt = make_zip(tmp_path / "a.ckpt")
    write_manifest(ckpt, global_step=1)
    truncate(ckpt, by_bytes=3)
    assert verify_checkpoint(ckpt) is None


def test_manifest_catches_a_bit_flip_that_keeps_the_size(tmp_path: Path) -> None:
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"\x00" * 1000)
    write_manifest(ckpt, global_step=1)
    flip_bit(ckpt, 500)
    assert verify_checkpoint(ckpt) is None


def test_a_disagreeing_manifest_wins_over_a_sound_zip(tmp_path: Path) -> None:
    ckpt = make_zip(tmp_path / "a.ckpt")
    write_manifest(ckpt, global_step=1)
    make_zip(ckpt, payload=b"rewritten after the manifest")
    assert verify_checkpoint(ckpt) is None


def test_an_unreadable_manifest_falls_back_to_the_zip_check(tmp_path: Path) -> None:
    ckpt = make_zip(tmp_path / "a.ckpt")
    manifest_path(ckpt).write_text("{ not json")
    info = verify_checkpoint(ckpt)
    assert info is not None and info.verified_by is VerifiedBy.ZIP and info.global_step is None


def test_zip_verification_accepts_a_valid_archive_without_manifest(tmp_path: Path) -> None:
    ckpt = make_zip(tmp_path / "hpc_ckpt_3.ckpt")
    assert verify_checkpoint(ckpt) == CheckpointInfo(ckpt, ckpt.stat().st_size, None, VerifiedBy.ZIP)


@pytest.mark.parametrize("by_bytes", [1, 22, 2000])  # into the central directory, the end record, the data
def test_zip_verification_rejects_a_truncated_archive(tmp_path: Path, by_bytes: int) -> None:
    ckpt = make_zip(tmp_path / "a.ckpt")
    truncate(ckpt, by_bytes)
    assert verify_checkpoint(ckpt) is None


def test_zip_verification_rejects_a_bit_flip_in_member_data(tmp_path: Path) -> None:
    ckpt = make_zip(tmp_path / "a.ckpt", payload=b"y" * 4096)
    offset = ckpt.read_bytes().index(b"y" * 100) + 50
    flip_bit(ckpt, offset)
    assert verify_checkpoint(ckpt) is None


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"PK\x03\x04 but nothing more"])
def test_zip_verification_rejects_garbage(tmp_path: Path, content: bytes) -> None:
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(content)
    assert verify_checkpoint(ckpt) is None


def test_zip_verification_rejects_an_empty_archive(tmp_path: Path) -> None:
    ckpt = tmp_path / "a.ckpt"
    zipfile.ZipFile(ckpt, "w").close()
    assert verify_checkpoint(ckpt) is None


def test_verification_never_unpickles(tmp_path: Path) -> None:
    """A pickle that would create a file when loaded verifies as a zip and creates nothing."""
    marker = tmp_path / "pwned"
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    ckpt = make_zip(tmp_path / "a.ckpt", payload=payload)
    assert verify_checkpoint(ckpt) is not None
    assert not marker.exists()


def test_verification_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert verify_checkpoint(tmp_path / "absent.ckpt") is None


def test_a_real_torch_checkpoint_verifies_and_a_truncated_one_does_not(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    ckpt = tmp_path / "hpc_ckpt_1.ckpt"
    with atomic_output(ckpt) as temporary:
        torch.save({"state_dict": {"w": torch.arange(1000.0)}, "global_step": 7}, temporary)
    info = verify_checkpoint(ckpt)
    assert info is not None and info.verified_by is VerifiedBy.ZIP
    truncate(ckpt, by_bytes=100)
    assert verify_checkpoint(ckpt) is None


def test_the_module_does_not_import_torch() -> None:
    code = ("import sys, snakemake_executor_plugin_slurm_gpu.checkpoints; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------- find_resumable

def test_find_resumable_is_none_for_an_empty_or_missing_directory(tmp_path: Path) -> None:
    assert find_resumable(tmp_path) is None
    assert find_resumable(tmp_path / "absent") is None


def test_find_resumable_returns_the_newest_valid_checkpoint(tmp_path: Path) -> None:
    for n, age in [(1, 30), (2, 20), (3, 10)]:
        set_age(make_zip(tmp_path / f"hpc_ckpt_{n}.ckpt"), age)
    assert find_resumable(tmp_path) == tmp_path / "hpc_ckpt_3.ckpt"


def test_find_resumable_falls_back_past_a_truncated_newest_and_logs_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    older = make_zip(tmp_path / "hpc_ckpt_1.ckpt")
    newest = make_zip(tmp_path / "hpc_ckpt_2.ckpt")
    truncate(newest)
    set_age(older, 20)
    set_age(newest, 10)
    with caplog.at_level(logging.WARNING, logger="snakemake_executor_plugin_slurm_gpu.checkpoints"):
        assert find_resumable(tmp_path) == older
    assert "hpc_ckpt_2.ckpt" in caplog.text and "zip" in caplog.text


def test_find_resumable_falls_back_past_a_newest_that_fails_its_manifest(tmp_path: Path) -> None:
    older = make_zip(tmp_path / "step-100.ckpt")
    write_manifest(older, 100)
    newest = make_zip(tmp_path / "step-200.ckpt")
    write_manifest(newest, 200)
    flip_bit(newest, 40)
    set_age(older, 20)
    set_age(newest, 10)
    info = newest_valid_checkpoint(tmp_path)
    assert info is not None and info.path == older and info.global_step == 100


def test_find_resumable_ignores_temp_files_unmarked_directories_links_and_other_suffixes(tmp_path: Path) -> None:
    valid = make_zip(tmp_path / "hpc_ckpt_1.ckpt")
    set_age(valid, 100)
    make_zip(tmp_path / ".tmp-hpc_ckpt_2.ckpt")       # a write in progress, however complete it looks
    (tmp_path / "sub.ckpt").mkdir()                   # a directory nothing says is complete
    make_zip(tmp_path / "sub.ckpt" / "inner.ckpt")
    make_zip(tmp_path / "model.pt")
    (tmp_path / "last.ckpt").symlink_to(valid.name)
    assert find_resumable(tmp_path) == valid


def test_find_resumable_is_none_when_nothing_verifies(tmp_path: Path) -> None:
    (tmp_path / "a.ckpt").write_bytes(b"junk")
    assert find_resumable(tmp_path) is None


def test_find_resumable_breaks_mtime_ties_by_the_number_in_the_name(tmp_path: Path) -> None:
    for n in (2, 9, 10):
        set_age(make_zip(tmp_path / f"hpc_ckpt_{n}.ckpt"), 0)  # coarse timestamps: all equal
    assert find_resumable(tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"


# ---------------------------------------------------------------- provenance

def test_provenance_digest_ignores_key_order_and_sees_every_value() -> None:
    a = provenance_digest({"lr": 0.1, "inputs": ["x", "y"], "code": {"train.py": "ab"}})
    b = provenance_digest({"code": {"train.py": "ab"}, "inputs": ["x", "y"], "lr": 0.1})
    assert a == b and len(a) == 64
    assert provenance_digest({"lr": 0.2, "inputs": ["x", "y"], "code": {"train.py": "ab"}}) != a
    assert provenance_digest({"lr": 0.1, "inputs": ["y", "x"], "code": {"train.py": "ab"}}) != a


def test_provenance_digest_accepts_paths_and_sets_and_refuses_the_rest() -> None:
    assert provenance_digest({"p": Path("a/b")}) == provenance_digest({"p": "a/b"})
    assert provenance_digest({"s": {"b", "a"}}) == provenance_digest({"s": ["a", "b"]})
    assert provenance_digest({"s": {Path("b"), 1}}) == provenance_digest({"s": ["b", 1]})
    with pytest.raises(TypeError, match="canonical"):
        provenance_digest({"o": object()})


def test_file_digests_hashes_existing_files_only(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    digests = file_digests([script, tmp_path / "absent.py", tmp_path])
    assert list(digests) == [str(script)]
    before = digests[str(script)]
    script.write_text("print('hi!')\n")
    assert file_digests([script])[str(script)] != before


def test_first_call_creates_a_private_directory_with_provenance(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints" / "train" / "all"
    assert ensure_provenance(directory, "d1", parts={"lr": 0.1}) is None
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    record = json.loads((directory / PROVENANCE_FILE).read_text())
    assert record["digest"] == "d1" and record["parts"] == {"lr": 0.1}
    assert names(directory) == {PROVENANCE_FILE}


def test_the_same_digest_keeps_the_checkpoints(tmp_path: Path) -> None:
    directory = tmp_path / "ck"
    ensure_provenance(directory, "d1")
    ckpt = make_zip(directory / "hpc_ckpt_1.ckpt")
    assert ensure_provenance(directory, "d1") is None
    assert ensure_provenance(directory, "d1") is None
    assert ckpt.exists() and find_resumable(directory) == ckpt
    assert not list(tmp_path.glob("ck.stale-*"))


def test_a_different_digest_moves_the_old_directory_aside_intact(tmp_path: Path) -> None:
    directory = tmp_path / "ck"
    ensure_provenance(directory, "d1")
    content = make_zip(directory / "hpc_ckpt_1.ckpt").read_bytes()
    moved = ensure_provenance(directory, "d2", now=NOW)
    assert moved == tmp_path / "ck.stale-20250102T030405Z"
    assert (moved / "hpc_ckpt_1.ckpt").read_bytes() == content
    assert json.loads((moved / PROVENANCE_FILE).read_text())["digest"] == "d1"
    assert names(directory) == {PROVENANCE_FILE}
    assert json.loads((directory / PROVENANCE_FILE).read_text())["digest"] == "d2"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert find_resumable(directory) is None


def test_checkpoints_without_provenance_are_moved_aside(tmp_path: Path) -> None:
    directory = tmp_path / "ck"
    directory.mkdir()
    make_zip(directory / "hpc_ckpt_1.ckpt")
    moved = ensure_provenance(directory, "d1", now=NOW)
    assert moved is not None and (moved / "hpc_ckpt_1.ckpt").exists()
    assert names(directory) == {PROVENANCE_FILE}


def test_an_existing_empty_directory_is_adopted_not_moved(tmp_path: Path) -> None:
    directory = tmp_path / "ck"
    directory.mkdir()
    assert ensure_provenance(directory, "d1") is None
    assert ensure_provenance(tmp_path / "ck", "d2") is None  # only provenance.json inside: nothing to save
    assert json.loads((directory / PROVENANCE_FILE).read_text())["digest"] == "d2"
    assert not list(tmp_path.glob("ck.stale-*"))


def test_two_moves_in_the_same_second_do_not_collide(tmp_path: Path) -> None:
    directory = tmp_path / "ck"
    ensure_provenance(directory, "d1")
    make_zip(directory / "a.ckpt")
    first = ensure_provenance(directory, "d2", now=NOW)
    make_zip(directory / "b.ckpt")
    second = ensure_provenance(directory, "d3", now=NOW)
    assert first is not None and second is not None and first != second
    assert (first / "a.ckpt").exists() and (second / "b.ckpt").exists()


# ---------------------------------------------------------------- cleanup

@pytest.fixture
def finished_dir(tmp_path: Path) -> Path:
    """A finished step: two valid checkpoints with manifests, a Lightning one, a damaged newest,
    a leftover temp file, an orphan manifest, a link, and files that are not ours to remove."""
    directory = tmp_path / "ck"
    ensure_provenance(directory, "d1")
    for n, age in [(1, 50), (2, 40)]:
        ckpt = make_zip(directory / f"step-{n}.ckpt")
        write_manifest(ckpt, n)
        set_age(ckpt, age)
    set_age(make_zip(directory / "hpc_ckpt_1.ckpt"), 45)
    damaged = make_zip(directory / "hpc_ckpt_2.ckpt")
    truncate(damaged)
    set_age(damaged, 10)
    (directory / ".tmp-step-3.ckpt.abc123").write_bytes(b"partial")
    (directory / "step-0.ckpt.json").write_text("{}")
    (directory / "last.ckpt").symlink_to("step-2.ckpt")
    (directory / "notes.txt").write_text("mine")
    (directory / "lightning_logs").mkdir()
    return directory


def test_cleanup_keep_removes_nothing(finished_dir: Path) -> None:
    before = names(finished_dir)
    assert cleanup_after_success(finished_dir, "keep") == []
    assert names(finished_dir) == before


def test_cleanup_keep_last_keeps_the_newest_valid_checkpoint_and_provenance(finished_dir: Path) -> None:
    removed = cleanup_after_success(finished_dir, CleanupPolicy.KEEP_LAST)
    assert names(finished_dir) == {"step-2.ckpt", "step-2.ckpt.json", PROVENANCE_FILE, "notes.txt", "lightning_logs"}
    assert {p.name for p in removed} == {"step-1.ckpt", "step-1.ckpt.json", "hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt",
                                         ".tmp-step-3.ckpt.abc123", "step-0.ckpt.json", "last.ckpt"}
    assert verify_checkpoint(finished_dir / "step-2.ckpt") is not None


def test_cleanup_keep_last_removes_nothing_when_nothing_verifies(tmp_path: Path) -> None:
    (tmp_path / "a.ckpt").write_bytes(b"junk")
    assert cleanup_after_success(tmp_path, "keep-last") == []
    assert names(tmp_path) == {"a.ckpt"}


def test_cleanup_delete_removes_the_directory(finished_dir: Path) -> None:
    assert cleanup_after_success(finished_dir, "delete") == [finished_dir]
    assert not finished_dir.exists()
    assert finished_dir.parent.exists()


@pytest.mark.parametrize("policy", list(CleanupPolicy))
def test_cleanup_of_a_missing_directory_removes_nothing(tmp_path: Path, policy: CleanupPolicy) -> None:
    assert cleanup_after_success(tmp_path / "absent", policy) == []


def test_cleanup_names_the_valid_policies_on_a_typo(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'keep-last'"):
        cleanup_after_success(tmp_path, "keep_last")


# ---------------------------------------------------------------- sharded (directory) checkpoints

SHARDS = ["__0_0.distcp", "__1_0.distcp", "optim/__0_0.distcp", "meta.pt", ".metadata"]


def make_sharded(path: Path, *, marker: bool = True, shard_bytes: int = 3000) -> Path:
    """A stand-in for what DCP and Lightning's FSDP (state_dict_type="sharded") write: one data file
    per rank, one in a subdirectory (DeepSpeed nests too), Lightning's meta.pt (a torch.save zip), and
    DCP's .metadata, which its coordinator writes last."""
    (path / "optim").mkdir(parents=True)
    for rank in (0, 1):
        (path / f"__{rank}_0.distcp").write_bytes(bytes([rank + 1]) * shard_bytes)
    (path / "optim" / "__0_0.distcp").write_bytes(b"m" * 500)
    make_zip(path / "meta.pt", payload=b"p" * 200)
    if marker:
        (path / ".metadata").write_bytes(b"dcp index")
    return path


def sharded_with_manifest(path: Path, step: int, seconds_ago: int) -> Path:
    make_sharded(path)
    write_manifest(path, step)
    set_age(path, seconds_ago)
    return path


def test_a_directory_manifest_records_every_file_with_its_size_and_sha256(tmp_path: Path) -> None:
    ckpt = make_sharded(tmp_path / "step-300.ckpt")
    written = write_manifest(ckpt, 300)
    assert written == tmp_path / "step-300.ckpt.json"
    manifest = json.loads(written.read_text())
    assert (manifest["kind"], manifest["file"], manifest["global_step"]) == ("directory", "step-300.ckpt", 300)
    assert sorted(manifest["files"]) == sorted(SHARDS)
    for name, entry in manifest["files"].items():
        data = (ckpt / name).read_bytes()
        assert entry == {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    total = sum((ckpt / name).stat().st_size for name in SHARDS)
    assert manifest["size_bytes"] == total
    assert verify_checkpoint(ckpt) == CheckpointInfo(ckpt, total, 300, VerifiedBy.MANIFEST, sharded=True)


def truncate_a_shard(ckpt: Path) -> None:
    truncate(ckpt / "__1_0.distcp", by_bytes=1)


def remove_a_shard(ckpt: Path) -> None:
    (ckpt / "__1_0.distcp").unlink()


def flip_a_bit_in_a_nested_shard(ckpt: Path) -> None:
    flip_bit(ckpt / "optim" / "__0_0.distcp", 10)


def add_a_stray_shard(ckpt: Path) -> None:
    (ckpt / "__2_0.distcp").write_bytes(b"from another world size")


def link_a_shard_elsewhere(ckpt: Path) -> None:
    outside = ckpt.parent / "outside.distcp"
    os.replace(ckpt / "__0_0.distcp", outside)
    (ckpt / "__0_0.distcp").symlink_to(outside)


DAMAGE = {"truncated shard": (truncate_a_shard, "__1_0.distcp is 2999 bytes"),
          "missing shard": (remove_a_shard, "missing: __1_0.distcp"),
          "bit flip in a nested shard": (flip_a_bit_in_a_nested_shard, "sha256 of optim/__0_0.distcp differs"),
          "stray shard": (add_a_stray_shard, "not in the manifest"),
          "shard replaced by a link": (link_a_shard_elsewhere, "__0_0.distcp is a symbolic link")}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_sharded_checkpoint_is_skipped_for_the_older_one(
        tmp_path: Path, damage: tuple, caplog: pytest.LogCaptureFixture) -> None:
    older = sharded_with_manifest(tmp_path / "step-100.ckpt", 100, seconds_ago=20)
    newest = sharded_with_manifest(tmp_path / "step-200.ckpt", 200, seconds_ago=10)
    damage_it, reason = damage
    damage_it(newest)
    set_age(newest, 10)  # an edit inside a directory is a change of its mtime
    assert verify_checkpoint(newest) is None
    with caplog.at_level(logging.WARNING, logger="snakemake_executor_plugin_slurm_gpu.checkpoints"):
        info = newest_valid_checkpoint(tmp_path)
    assert info is not None and (info.path, info.global_step, info.sharded) == (older, 100, True)
    assert "step-200.ckpt" in caplog.text and reason in caplog.text


def test_find_resumable_returns_the_newest_checkpoint_whether_file_or_directory(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ck"
    ckpt_dir.mkdir(mode=0o700)
    single = make_zip(ckpt_dir / "step-100.ckpt")
    write_manifest(single, 100)
    set_age(single, 30)
    sharded = sharded_with_manifest(ckpt_dir / "step-200.ckpt", 200, seconds_ago=20)
    assert find_resumable(ckpt_dir) == sharded
    set_age(make_zip(ckpt_dir / "hpc_ckpt_3.ckpt"), 10)  # Lightning's own, newer still
    assert find_resumable(ckpt_dir) == ckpt_dir / "hpc_ckpt_3.ckpt"


def test_beyond_the_hash_limit_big_shards_are_recorded_by_size(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints.manifest, "SMALL_FILE_BYTES", 1000)  # read where write_manifest lives
    ckpt = make_sharded(tmp_path / "step-1.ckpt")
    manifest = json.loads(write_manifest(ckpt, 1, hash_limit_bytes=4000).read_text())
    unhashed = {name for name, entry in manifest["files"].items() if entry["sha256"] is None}
    assert unhashed == {"__0_0.distcp", "__1_0.distcp"}  # the two 3000-byte shards; meta.pt, .metadata hashed
    assert verify_checkpoint(ckpt) is not None
    flip_bit(ckpt / "__0_0.distcp", 5)
    assert verify_checkpoint(ckpt) is not None  # the price of size-only: a same-size change passes
    flip_bit(ckpt / ".metadata", 0)
    assert verify_checkpoint(ckpt) is None      # the small files are still hashed
    flip_bit(ckpt / ".metadata", 0)
    truncate_a_shard(ckpt)
    assert verify_checkpoint(ckpt) is None      # and a cut-short shard is still caught


def test_without_a_manifest_a_directory_is_trusted_only_when_dcp_finished_it(tmp_path: Path) -> None:
    finished = make_sharded(tmp_path / "a.ckpt")
    info = verify_checkpoint(finished)
    assert info is not None and (info.verified_by, info.global_step, info.sharded) == (
        VerifiedBy.DCP_METADATA, None, True)
    assert verify_checkpoint(make_sharded(tmp_path / "b.ckpt", marker=False)) is None  # killed before .metadata
    torn = make_sharded(tmp_path / "c.ckpt")
    truncate(torn / "meta.pt")
    assert verify_checkpoint(torn) is None


def test_an_unreadable_directory_manifest_falls_back_to_the_dcp_marker(tmp_path: Path) -> None:
    ckpt = make_sharded(tmp_path / "step-5.ckpt")
    manifest_path(ckpt).write_text("{not json")
    info = verify_checkpoint(ckpt)
    assert info is not None and info.verified_by is VerifiedBy.DCP_METADATA


def test_a_manifest_of_one_kind_never_vouches_for_the_other(tmp_path: Path) -> None:
    single = make_zip(tmp_path / "a.ckpt")
    write_manifest(single, 1)
    sharded = make_sharded(tmp_path / "b.ckpt")
    write_manifest(sharded, 2)
    os.replace(manifest_path(single), tmp_path / "saved.json")
    os.replace(manifest_path(sharded), manifest_path(single))
    os.replace(tmp_path / "saved.json", manifest_path(sharded))
    assert verify_checkpoint(single) is None and verify_checkpoint(sharded) is None


def test_a_directory_manifest_with_a_path_out_of_the_checkpoint_is_no_claim(tmp_path: Path) -> None:
    ckpt = make_sharded(tmp_path / "step-5.ckpt")
    write_manifest(ckpt, 5)
    manifest = json.loads(manifest_path(ckpt).read_text())
    manifest["files"]["../outside"] = {"size_bytes": 1, "sha256": None}
    manifest_path(ckpt).write_text(json.dumps(manifest))
    info = verify_checkpoint(ckpt)  # judged as if it had no manifest
    assert info is not None and info.verified_by is VerifiedBy.DCP_METADATA


def test_directory_verification_never_unpickles(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = make_sharded(tmp_path / "step-5.ckpt")
    (ckpt / ".metadata").write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    (ckpt / "meta.pt").unlink()
    make_zip(ckpt / "meta.pt", payload=(ckpt / ".metadata").read_bytes())
    assert verify_checkpoint(ckpt) is not None
    write_manifest(ckpt, 5)
    assert verify_checkpoint(ckpt) is not None
    assert not marker.exists()


def test_publish_directory_makes_it_private_recorded_and_final_in_one_rename(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ck"
    ckpt_dir.mkdir(mode=0o700)
    old_umask = os.umask(0o002)  # the laxest umask a site may have: group-writable
    try:
        temporary = make_sharded(ckpt_dir / ".tmp-step-000000007.ckpt.0123456789ab")
    finally:
        os.umask(old_umask)
    final = ckpt_dir / "step-000000007.ckpt"
    assert publish_directory(temporary, final, 7) == manifest_path(final)
    assert names(ckpt_dir) == {final.name, manifest_path(final).name}
    for path in [final, *final.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {mode:04o}"
    info = verify_checkpoint(final)
    assert info is not None and (info.global_step, info.verified_by, info.sharded) == (7, VerifiedBy.MANIFEST, True)


def test_publish_directory_replaces_a_checkpoint_of_the_same_step(tmp_path: Path) -> None:
    final = tmp_path / "step-000000007.ckpt"
    sharded_with_manifest(final, 7, seconds_ago=100)
    truncate_a_shard(final)  # damaged: the run resumed from an older one and reached step 7 again
    temporary = make_sharded(tmp_path / ".tmp-step-000000007.ckpt.fresh", shard_bytes=10)
    publish_directory(temporary, final, 7)
    assert names(tmp_path) == {final.name, manifest_path(final).name}
    assert (final / "__0_0.distcp").stat().st_size == 10
    assert verify_checkpoint(final) is not None


def test_publish_directory_refuses_a_link_inside_and_publishes_nothing(tmp_path: Path) -> None:
    temporary = make_sharded(tmp_path / ".tmp-step-1.ckpt.x")
    (temporary / "elsewhere").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="elsewhere is a symbolic link"):
        publish_directory(temporary, tmp_path / "step-1.ckpt", 1)
    assert not (tmp_path / "step-1.ckpt").exists() and not manifest_path(tmp_path / "step-1.ckpt").exists()


def test_remove_checkpoint_removes_a_directory_and_its_manifest_without_following_links(tmp_path: Path) -> None:
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "data").write_bytes(b"not a checkpoint")
    ckpt = sharded_with_manifest(tmp_path / "step-1.ckpt", 1, seconds_ago=5)
    (ckpt / "link").symlink_to(keep)
    remove_checkpoint(ckpt)
    assert names(tmp_path) == {"precious"}
    assert (keep / "data").read_bytes() == b"not a checkpoint"
    link = tmp_path / "step-2.ckpt"
    link.symlink_to(keep)
    remove_checkpoint(link)  # a link to a directory: the link goes, the directory stays
    assert names(tmp_path) == {"precious"} and (keep / "data").exists()


def test_remove_leftovers_removes_what_killed_saves_left_and_nothing_else(tmp_path: Path) -> None:
    make_sharded(tmp_path / ".tmp-step-000000005.ckpt.a1b2")           # a killed sharded save
    (tmp_path / ".tmp-step-000000006.ckpt.c3d4").write_bytes(b"half")  # a killed file save
    (tmp_path / ".tmp-interrupted.json.xyz").write_bytes(b"{}")        # not a save's
    sharded_with_manifest(tmp_path / "step-000000004.ckpt", 4, seconds_ago=1)
    removed = remove_leftovers(tmp_path)
    assert {p.name for p in removed} == {".tmp-step-000000005.ckpt.a1b2", ".tmp-step-000000006.ckpt.c3d4"}
    assert names(tmp_path) == {".tmp-interrupted.json.xyz", "step-000000004.ckpt", "step-000000004.ckpt.json"}


def test_cleanup_keep_last_removes_older_sharded_checkpoints_and_leftover_directories(tmp_path: Path) -> None:
    directory = tmp_path / "ck"
    ensure_provenance(directory, "d1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data").write_bytes(b"x")
    older = sharded_with_manifest(directory / "step-1.ckpt", 1, seconds_ago=30)
    (older / "link").symlink_to(outside)
    sharded_with_manifest(directory / "step-2.ckpt", 2, seconds_ago=20)
    make_sharded(directory / ".tmp-step-3.ckpt.abc123", marker=False)
    (directory / "lightning_logs").mkdir()
    removed = cleanup_after_success(directory, "keep-last")
    assert {p.name for p in removed} == {"step-1.ckpt", "step-1.ckpt.json", ".tmp-step-3.ckpt.abc123"}
    assert names(directory) == {"step-2.ckpt", "step-2.ckpt.json", PROVENANCE_FILE, "lightning_logs"}
    assert (outside / "data").exists()
    assert verify_checkpoint(directory / "step-2.ckpt") is not None


def test_cleanup_delete_removes_sharded_checkpoints_too(tmp_path: Path) -> None:
    directory = tmp_path / "ck"
    ensure_provenance(directory, "d1")
    sharded_with_manifest(directory / "step-1.ckpt", 1, seconds_ago=1)
    assert cleanup_after_success(directory, "delete") == [directory]
    assert not directory.exists()
