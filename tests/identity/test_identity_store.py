"""Key files on disk: format, permissions, refusals, never overwriting."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qflow_node.identity import IdentityError, SigningKey
from qflow_node.identity.store import (
    ActorNameError,
    KeyExistsError,
    KeyFileError,
    create_actor_key,
    create_node_key,
    list_actors,
    load_actor_key,
    load_node_key,
    read_key_file,
    validate_actor_name,
)
from qflow_node.repo import RepoPaths

SEED = bytes(range(32))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def paths(tmp_path: Path) -> RepoPaths:
    root = tmp_path / "repo"
    root.mkdir()
    return RepoPaths(root)


def test_node_key_file_is_the_raw_seed_mode_0600_in_a_0700_dir(paths: RepoPaths) -> None:
    key = create_node_key(paths, SigningKey(SEED))
    assert paths.node_key.read_bytes() == SEED
    assert mode(paths.node_key) == 0o600
    assert mode(paths.keys) == 0o700
    assert load_node_key(paths) == key
    assert load_node_key(paths).peer_id == SigningKey(SEED).peer_id


def test_key_dir_mode_ignores_the_umask(paths: RepoPaths) -> None:
    old = os.umask(0o077 | 0o700)  # would give the directory mode 0000
    try:
        create_node_key(paths)
    finally:
        os.umask(old)
    assert mode(paths.keys) == 0o700
    assert mode(paths.node_key) == 0o600


def test_create_node_key_generates_a_fresh_key(paths: RepoPaths) -> None:
    key = create_node_key(paths)
    assert load_node_key(paths).seed == key.seed
    assert key.seed != SEED


def test_create_node_key_refuses_to_overwrite(paths: RepoPaths) -> None:
    create_node_key(paths, SigningKey(SEED))
    with pytest.raises(KeyExistsError, match=r"node\.key already exists; refusing to overwrite"):
        create_node_key(paths)
    assert paths.node_key.read_bytes() == SEED


def test_create_node_key_refuses_a_dangling_symlink(paths: RepoPaths) -> None:
    paths.keys.mkdir(mode=0o700)
    paths.node_key.symlink_to(paths.root / "elsewhere.key")
    with pytest.raises(KeyExistsError):
        create_node_key(paths)
    assert not (paths.root / "elsewhere.key").exists()


def test_create_node_key_needs_the_repo_dir(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        create_node_key(RepoPaths(tmp_path / "missing"))


def test_load_refuses_a_missing_key_naming_the_path(paths: RepoPaths) -> None:
    with pytest.raises(KeyFileError, match=f"key file {paths.node_key} does not exist"):
        load_node_key(paths)


@pytest.mark.parametrize("perms", [0o644, 0o640, 0o604, 0o660, 0o666, 0o700 | 0o004])
def test_load_refuses_permissions_readable_by_others(paths: RepoPaths, perms: int) -> None:
    create_node_key(paths, SigningKey(SEED))
    paths.node_key.chmod(perms)
    expected = (
        f"permissions {perms:04o} for {paths.node_key} are too open; .*"
        f"run chmod 600 {paths.node_key}"
    )
    with pytest.raises(KeyFileError, match=expected):
        load_node_key(paths)


@pytest.mark.parametrize("perms", [0o600, 0o400])
def test_load_accepts_owner_only_permissions(paths: RepoPaths, perms: int) -> None:
    create_node_key(paths, SigningKey(SEED))
    paths.node_key.chmod(perms)
    assert load_node_key(paths).seed == SEED


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_load_refuses_wrong_length(paths: RepoPaths, size: int) -> None:
    paths.keys.mkdir(mode=0o700)
    paths.node_key.write_bytes(b"\x07" * size)
    paths.node_key.chmod(0o600)
    with pytest.raises(KeyFileError, match=f"32-byte Ed25519 seed, found {size} bytes"):
        load_node_key(paths)


def test_load_refuses_a_directory(paths: RepoPaths) -> None:
    paths.node_key.mkdir(parents=True, mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_node_key(paths)


def test_load_refuses_a_fifo_without_blocking(paths: RepoPaths) -> None:
    paths.keys.mkdir(mode=0o700)
    os.mkfifo(paths.node_key, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_node_key(paths)


def test_load_follows_a_symlink_and_checks_the_target(paths: RepoPaths, tmp_path: Path) -> None:
    target = tmp_path / "secret.key"
    target.write_bytes(SEED)
    target.chmod(0o600)
    paths.keys.mkdir(mode=0o700)
    paths.node_key.symlink_to(target)
    assert load_node_key(paths).seed == SEED
    target.chmod(0o644)
    with pytest.raises(KeyFileError, match="permissions 0644"):
        load_node_key(paths)


def test_key_file_errors_are_identity_errors(tmp_path: Path) -> None:
    with pytest.raises(IdentityError):
        read_key_file(tmp_path / "none.key")


def test_no_temp_files_are_left_behind(paths: RepoPaths) -> None:
    create_node_key(paths)
    create_actor_key(paths, "alice")
    assert sorted(p.name for p in paths.keys.iterdir()) == ["actors", "node.key"]
    assert [p.name for p in paths.actors.iterdir()] == ["alice.key"]


# -- actors ------------------------------------------------------------------------------


def test_actor_key_round_trip(paths: RepoPaths) -> None:
    key = create_actor_key(paths, "alice", SigningKey(SEED))
    assert paths.actor_key("alice").read_bytes() == SEED
    assert mode(paths.actor_key("alice")) == 0o600
    assert mode(paths.actors) == 0o700
    assert load_actor_key(paths, "alice") == key
    assert load_actor_key(paths, "alice").did == SigningKey(SEED).did


def test_actor_key_refuses_to_overwrite(paths: RepoPaths) -> None:
    create_actor_key(paths, "alice", SigningKey(SEED))
    with pytest.raises(KeyExistsError, match=r"alice\.key already exists"):
        create_actor_key(paths, "alice")
    assert load_actor_key(paths, "alice").seed == SEED


def test_load_unknown_actor(paths: RepoPaths) -> None:
    with pytest.raises(KeyFileError, match="no actor named 'bob'"):
        load_actor_key(paths, "bob")


def test_actor_key_permissions_are_checked(paths: RepoPaths) -> None:
    create_actor_key(paths, "alice")
    paths.actor_key("alice").chmod(0o644)
    with pytest.raises(KeyFileError, match="too open"):
        load_actor_key(paths, "alice")


def test_list_actors_is_sorted_and_skips_foreign_files(paths: RepoPaths) -> None:
    assert list_actors(paths) == []
    for name in ["carol", "alice", "bob-2", "d.e_f"]:
        create_actor_key(paths, name)
    (paths.actors / "README").write_text("not a key")
    (paths.actors / "Upper.key").write_bytes(SEED)
    (paths.actors / ".alice.key.x1y2.tmp").write_bytes(SEED)
    assert list_actors(paths) == ["alice", "bob-2", "carol", "d.e_f"]


@pytest.mark.parametrize("name", ["a", "alice", "0", "bob-2", "d.e_f", "a" * 64, "x..y"])
def test_valid_actor_names(name: str) -> None:
    assert validate_actor_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Alice",
        "-alice",
        ".alice",
        "_alice",
        "..",
        "a/b",
        "../node",
        "a" * 65,
        "alice\n",
        "al ice",
        "ålice",
        "alice.key\x00",
    ],
)
def test_invalid_actor_names_are_refused_everywhere(paths: RepoPaths, name: str) -> None:
    with pytest.raises(ActorNameError, match="invalid actor name"):
        validate_actor_name(name)
    with pytest.raises(ActorNameError):
        create_actor_key(paths, name)
    with pytest.raises(ActorNameError):
        load_actor_key(paths, name)
    assert not paths.keys.exists()
