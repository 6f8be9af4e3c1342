"""`qflow init` and `qflow id` through the real command group (lazy loading included)."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qflow_node.cli.init_cmd import DEFAULT_CONFIG
from qflow_node.cli.main import qflow
from qflow_node.identity import SigningKey
from qflow_node.identity.store import create_node_key, load_actor_key, load_node_key
from qflow_node.repo import RepoPaths

ZERO_SEED_PEER_ID = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
ZERO_SEED_DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(qflow, list(args), env=env, catch_exceptions=False)


def assert_user_error(result: Result, fragment: str) -> None:
    """Exit 2, one `error: …` line on stderr naming the problem, nothing on stdout."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    result = run("init", "--repo", str(root))
    assert result.exit_code == 0, result.output
    return root


# -- init --------------------------------------------------------------------------------


def test_init_creates_the_layout_with_private_modes(repo: Path) -> None:
    paths = RepoPaths(repo)
    assert mode(repo) == 0o700
    assert mode(paths.keys) == 0o700
    assert mode(paths.actors) == 0o700
    assert mode(paths.node_key) == 0o600
    assert len(paths.node_key.read_bytes()) == 32
    assert paths.blocks.is_dir()
    assert paths.ledger.is_dir()
    assert list(paths.actors.iterdir()) == []
    assert sorted(p.name for p in repo.iterdir()) == ["blocks", "config.toml", "keys", "ledger"]


def test_init_writes_a_commented_valid_default_config(repo: Path) -> None:
    text = RepoPaths(repo).config.read_text()
    assert text == DEFAULT_CONFIG
    assert text.startswith("#")
    config = tomllib.loads(text)
    assert config == {
        "node": {
            "listen": ["/ip4/127.0.0.1/tcp/0"],
            "bootstrap": [],
            "subnets": ["default"],
        },
        "store": {"max_block_size": 1048576},
    }


def test_init_prints_the_repo_and_the_peer_id(tmp_path: Path) -> None:
    root = tmp_path / "node"
    result = run("init", "--repo", str(root))
    assert result.exit_code == 0
    peer_id = load_node_key(RepoPaths(root)).peer_id
    assert result.stdout == f"initialised qflow repo at {root}\npeer id: {peer_id}\n"
    assert peer_id.startswith("12D3KooW")


def test_init_twice_refuses_and_touches_nothing(repo: Path) -> None:
    paths = RepoPaths(repo)
    paths.config.write_text("# edited by the operator\n")
    before = snapshot(repo)
    result = run("init", "--repo", str(repo))
    assert_user_error(result, f"{repo} is already an initialised qflow repo")
    assert snapshot(repo) == before


def test_init_refuses_a_non_empty_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = run("init", "--repo", str(tmp_path))
    assert_user_error(result, "is not empty and is not a qflow repo (found notes.txt)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    result = run("init", "--repo", str(target))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert target.read_text() == "x"


def test_init_uses_an_existing_empty_directory(tmp_path: Path) -> None:
    result = run("init", "--repo", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert RepoPaths(tmp_path).node_key.is_file()


def test_init_completes_an_interrupted_init_keeping_the_config(tmp_path: Path) -> None:
    paths = RepoPaths(tmp_path / "node")
    paths.root.mkdir()
    paths.blocks.mkdir()
    paths.config.write_text("# custom\n")
    result = run("init", "--repo", str(paths.root))
    assert result.exit_code == 0, result.output
    assert paths.config.read_text() == "# custom\n"
    assert paths.node_key.is_file()
    assert paths.ledger.is_dir()


def test_init_creates_missing_parents(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "node"
    assert run("init", "--repo", str(root)).exit_code == 0
    assert RepoPaths(root).node_key.is_file()


def test_init_reads_the_repo_from_the_environment(tmp_path: Path) -> None:
    root = tmp_path / "from-env"
    result = run("init", env={"QFLOW_REPO": str(root)})
    assert result.exit_code == 0, result.output
    assert RepoPaths(root).node_key.is_file()


def test_each_init_makes_a_distinct_identity(tmp_path: Path) -> None:
    run("init", "--repo", str(tmp_path / "a"))
    run("init", "--repo", str(tmp_path / "b"))
    a = load_node_key(RepoPaths(tmp_path / "a"))
    b = load_node_key(RepoPaths(tmp_path / "b"))
    assert a.peer_id != b.peer_id


# -- id show -----------------------------------------------------------------------------


def test_id_show_prints_the_node_peer_id_and_did(repo: Path) -> None:
    key = load_node_key(RepoPaths(repo))
    result = run("id", "show", "--repo", str(repo))
    assert result.exit_code == 0
    assert result.stdout == f"peer id: {key.peer_id}\ndid: {key.did}\n"


def test_id_show_of_a_known_key_prints_the_published_vectors(tmp_path: Path) -> None:
    create_node_key(RepoPaths(tmp_path), SigningKey(bytes(32)))
    result = run("id", "show", "--repo", str(tmp_path))
    assert result.stdout == f"peer id: {ZERO_SEED_PEER_ID}\ndid: {ZERO_SEED_DID}\n"


def test_id_show_json(tmp_path: Path) -> None:
    create_node_key(RepoPaths(tmp_path), SigningKey(bytes(32)))
    result = run("id", "show", "--repo", str(tmp_path), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "kind": "node",
        "peer_id": ZERO_SEED_PEER_ID,
        "did": ZERO_SEED_DID,
        "public_key": "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29",
        "repo": str(tmp_path),
    }
    assert result.stdout.count("\n") == 1


def test_id_show_reads_the_repo_from_the_environment(repo: Path) -> None:
    key = load_node_key(RepoPaths(repo))
    result = run("id", "show", env={"QFLOW_REPO": str(repo)})
    assert result.stdout.startswith(f"peer id: {key.peer_id}\n")


def test_id_show_on_a_missing_repo(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = run("id", "show", "--repo", str(missing))
    assert_user_error(result, f"{missing} is not an initialised qflow repo")
    assert f"run `qflow init --repo {missing}`" in result.stderr
    assert not missing.exists()


def test_id_show_refuses_a_key_readable_by_others(repo: Path) -> None:
    node_key = RepoPaths(repo).node_key
    node_key.chmod(0o644)
    result = run("id", "show", "--repo", str(repo))
    assert_user_error(result, f"permissions 0644 for {node_key} are too open")
    assert f"chmod 600 {node_key}" in result.stderr


def test_id_show_refuses_a_truncated_key(repo: Path) -> None:
    node_key = RepoPaths(repo).node_key
    node_key.write_bytes(b"\x00" * 16)
    node_key.chmod(0o600)
    result = run("id", "show", "--repo", str(repo))
    assert_user_error(result, "must hold a raw 32-byte Ed25519 seed, found 16 bytes")


# -- actors ------------------------------------------------------------------------------


def test_id_new_creates_an_actor_and_prints_its_did(repo: Path) -> None:
    result = run("id", "new", "alice", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    key = load_actor_key(RepoPaths(repo), "alice")
    assert result.stdout == f"{key.did}\n"
    assert key.did.startswith("did:key:z6Mk")
    assert mode(RepoPaths(repo).actor_key("alice")) == 0o600


def test_id_show_name_prints_the_actor_did(repo: Path) -> None:
    did = run("id", "new", "alice", "--repo", str(repo)).stdout
    result = run("id", "show", "alice", "--repo", str(repo))
    assert result.exit_code == 0
    assert result.stdout == did


def test_id_show_name_json(repo: Path) -> None:
    run("id", "new", "alice", "--repo", str(repo))
    key = load_actor_key(RepoPaths(repo), "alice")
    result = run("id", "show", "alice", "--json", "--repo", str(repo))
    assert json.loads(result.stdout) == {
        "kind": "actor",
        "name": "alice",
        "did": key.did,
        "public_key": key.public_key.hex(),
    }


def test_id_new_json(repo: Path) -> None:
    result = run("id", "new", "bob", "--json", "--repo", str(repo))
    info = json.loads(result.stdout)
    assert info["did"] == load_actor_key(RepoPaths(repo), "bob").did
    assert info["name"] == "bob"


def test_id_new_refuses_an_existing_actor(repo: Path) -> None:
    run("id", "new", "alice", "--repo", str(repo))
    before = RepoPaths(repo).actor_key("alice").read_bytes()
    result = run("id", "new", "alice", "--repo", str(repo))
    assert_user_error(result, "alice.key already exists; refusing to overwrite it")
    assert RepoPaths(repo).actor_key("alice").read_bytes() == before


@pytest.mark.parametrize("name", ["Alice", "../node", "a/b", "-x", "a" * 65])
def test_id_new_refuses_an_invalid_name(repo: Path, name: str) -> None:
    result = run("id", "new", "--repo", str(repo), "--", name)
    assert_user_error(result, f"invalid actor name {name!r}")
    assert list(RepoPaths(repo).actors.iterdir()) == []


def test_id_new_on_a_missing_repo_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = run("id", "new", "alice", "--repo", str(missing))
    assert_user_error(result, "is not an initialised qflow repo")
    assert not missing.exists()


def test_id_show_unknown_actor(repo: Path) -> None:
    result = run("id", "show", "carol", "--repo", str(repo))
    assert_user_error(result, "no actor named 'carol'")


def test_id_list(repo: Path) -> None:
    assert run("id", "list", "--repo", str(repo)).stdout == ""
    for name in ["carol", "alice"]:
        run("id", "new", name, "--repo", str(repo))
    paths = RepoPaths(repo)
    alice, carol = load_actor_key(paths, "alice"), load_actor_key(paths, "carol")
    result = run("id", "list", "--repo", str(repo))
    assert result.stdout == f"alice\t{alice.did}\ncarol\t{carol.did}\n"
    listed = json.loads(run("id", "list", "--json", "--repo", str(repo)).stdout)
    assert [(a["name"], a["did"]) for a in listed] == [("alice", alice.did), ("carol", carol.did)]


def test_commands_are_listed_in_help() -> None:
    result = run("id", "--help")
    assert result.exit_code == 0
    for command in ("show", "new", "list"):
        assert command in result.stdout
