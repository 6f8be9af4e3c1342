"""`qflow block put|get|stat` through the real `qflow` entry point (click CliRunner)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qflow_node import appendlog
from qflow_node.cli.main import qflow
from qflow_node.codec import MAX_BLOCK_SIZE, decode_dag, encode_dag, parse_cid, raw_block
from qflow_node.store import FileBlockStore

EMPTY_MAP = "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "blocks").mkdir(parents=True)
    return root


def run(repo: Path, *args: str, input: bytes | None = None) -> Result:
    command, *rest = args
    return CliRunner().invoke(qflow, ["block", command, "--repo", str(repo), *rest], input=input)


def assert_error(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr  # one line
    assert result.stderr.startswith("error: ")
    assert message in result.stderr, result.stderr


# -- put / get / stat --------------------------------------------------------------------


def test_put_raw_file_then_get_it_back(repo: Path, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 3
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    put = run(repo, "put", str(source))
    assert put.exit_code == 0, put.stderr
    assert put.stdout == raw_block(payload).cid.encode() + "\n"
    got = run(repo, "get", put.stdout.strip())
    assert got.exit_code == 0, got.stderr
    assert got.stdout_bytes == payload


def test_put_raw_from_stdin(repo: Path) -> None:
    put = run(repo, "put", "--codec", "raw", "-", input=b"from stdin\n")
    assert put.exit_code == 0, put.stderr
    assert put.stdout.strip() == raw_block(b"from stdin\n").cid.encode()


def test_put_dag_cbor_of_an_empty_map_gives_the_known_cid(repo: Path) -> None:
    put = run(repo, "put", "--codec", "dag-cbor", "-", input=b" {} \n")
    assert put.exit_code == 0, put.stderr
    assert put.stdout == EMPTY_MAP + "\n"
    assert run(repo, "get", EMPTY_MAP).stdout_bytes == b"\xa0"


def test_put_dag_cbor_with_links_and_bytes_stores_canonical_bytes(
    repo: Path, tmp_path: Path
) -> None:
    document = {
        "zeta": "last by length",
        "a": {"/": EMPTY_MAP},
        "blob": {"/": {"bytes": base64.b64encode(b"\x00\x01binary").decode().rstrip("=")}},
        "f": 2.0,
        "i": 2,
        "list": [1, -1.5, None, True, "x", [{"/": EMPTY_MAP}]],
    }
    source = tmp_path / "doc.json"
    source.write_text(json.dumps(document, indent=2))
    put = run(repo, "put", "--codec", "dag-cbor", str(source))
    assert put.exit_code == 0, put.stderr
    cid = put.stdout.strip()

    expected = {
        "zeta": "last by length",
        "a": parse_cid(EMPTY_MAP),
        "blob": b"\x00\x01binary",
        "f": 2.0,
        "i": 2,
        "list": [1, -1.5, None, True, "x", [parse_cid(EMPTY_MAP)]],
    }
    got = run(repo, "get", cid)
    assert got.exit_code == 0, got.stderr
    assert got.stdout_bytes == encode_dag(expected)
    decoded = decode_dag(got.stdout_bytes)
    assert decoded == expected
    assert type(decoded["f"]) is float
    assert type(decoded["i"]) is int
    assert list(decoded) == ["a", "f", "i", "blob", "list", "zeta"]  # length-first order


def test_known_cid_for_a_document_with_a_link_and_bytes(repo: Path) -> None:
    text = (
        f'{{"a": {{"/": "{EMPTY_MAP}"}}, "b": {{"/": {{"bytes": "aGVsbG8"}}}}, "f": 1.0, "i": 1}}'
    )
    put = run(repo, "put", "--codec", "dag-cbor", "-", input=text.encode())
    assert put.stdout.strip() == "bafyreihaanqd3vflob5iqqtv3aa2t6op5l5coxjcjmvsvncsuhza323ci4"


def test_put_is_idempotent(repo: Path) -> None:
    first = run(repo, "put", "-", input=b"same")
    second = run(repo, "put", "-", input=b"same")
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout


def test_stat(repo: Path) -> None:
    cid = run(repo, "put", "-", input=b"x" * 42).stdout.strip()
    text = run(repo, "stat", cid)
    assert text.exit_code == 0, text.stderr
    assert text.stdout == f"cid   {cid}\ncodec raw\nsize  42\n"
    as_json = run(repo, "stat", "--json", EMPTY_MAP)
    assert as_json.exit_code == 1  # not stored yet
    run(repo, "put", "--codec", "dag-cbor", "-", input=b"{}")
    as_json = run(repo, "stat", "--json", EMPTY_MAP)
    assert as_json.exit_code == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"cid": EMPTY_MAP, "codec": "dag-cbor", "size": 1}


def test_repo_from_environment(repo: Path) -> None:
    result = CliRunner().invoke(
        qflow, ["block", "put", "-"], input=b"env", env={"QFLOW_REPO": str(repo)}
    )
    assert result.exit_code == 0, result.stderr
    assert (repo / "blocks").is_dir()
    assert result.stdout.strip() == raw_block(b"env").cid.encode()


# -- errors --------------------------------------------------------------------------------


def test_get_missing_block_exits_1(repo: Path) -> None:
    cid = raw_block(b"never stored").cid.encode()
    assert_error(run(repo, "get", cid), 1, f"error: block {cid} not found")
    assert_error(run(repo, "stat", cid), 1, f"error: block {cid} not found")


def test_get_corrupt_block_exits_1(repo: Path) -> None:
    cid = run(repo, "put", "-", input=b"soon broken").stdout.strip()
    # Wrong bytes in a valid pack entry (damage no CRC catches), named after the others.
    key = parse_cid(cid).cid_bytes
    pack = repo / "blocks" / "packs" / f"{time.time_ns():020d}-1.pack"
    pack.write_bytes(appendlog.MAGIC + appendlog.frame(bytes((1, len(key))) + key + b"soon brokeN"))
    result = run(repo, "get", cid)
    assert_error(result, 1, f"error: block {cid} at {pack} is corrupt: its 11 bytes hash to ")
    assert "moved to " not in result.stderr  # a pack is shared by many blocks: left in place
    assert_error(run(repo, "get", cid), 1, "is corrupt")  # every process refuses it


def test_get_corrupt_block_file_exits_1_and_quarantines(repo: Path) -> None:
    # A block file of an older repo (one file per block), corrupt.
    cid = raw_block(b"soon broken").cid.encode()
    path = repo / "blocks" / cid[-3:-1] / cid
    path.parent.mkdir()
    path.write_bytes(b"soon brokeN")
    result = run(repo, "get", cid)
    assert_error(result, 1, f"error: block {cid} at {path} is corrupt: its 11 bytes hash to ")
    assert "moved to " in result.stderr
    assert [p.read_bytes() for p in (repo / "blocks" / "quarantine").iterdir()] == [b"soon brokeN"]
    assert_error(run(repo, "get", cid), 1, "not found")


@pytest.mark.parametrize("command", ["get", "stat"])
def test_invalid_cid_exits_2(repo: Path, command: str) -> None:
    assert_error(run(repo, command, "not-a-cid"), 2, "cannot parse CID 'not-a-cid'")
    assert_error(
        run(repo, command, "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"),
        2,
        "expected a base32 CIDv1",
    )


def test_missing_repo_says_to_run_init(tmp_path: Path) -> None:
    repo = tmp_path / "nowhere"
    for args in (("put", "-"), ("get", EMPTY_MAP), ("stat", EMPTY_MAP)):
        result = run(repo, *args, input=b"x")
        assert_error(
            result,
            2,
            f"error: no block store at {repo / 'blocks'}; run `qflow init --repo {repo}` first",
        )
    assert not repo.exists()


def test_invalid_json_reports_line_and_column(repo: Path, tmp_path: Path) -> None:
    source = tmp_path / "bad.json"
    source.write_text('{\n  "a": 1,\n  "b": ,\n}\n')
    assert_error(
        run(repo, "put", "--codec", "dag-cbor", str(source)),
        2,
        f"error: {source}: invalid JSON at line 3, column 8: Expecting value",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"l": {"/": "bafynope"}}', '-: $.l["/"]: invalid link: cannot parse CID'),
        (b'{"a": 1, "a": 2}', "-: $: duplicate key 'a'"),
        (b'{"n": NaN}', "-: $.n: NaN is not a number"),
        (b'{"s": "\\ud800"}', "-: cannot encode as dag-cbor"),
    ],
)
def test_invalid_dag_json_content_exits_2(repo: Path, text: bytes, message: str) -> None:
    assert_error(run(repo, "put", "--codec", "dag-cbor", "-", input=text), 2, message)
    assert list(FileBlockStore(repo / "blocks").iter_cids()) == []


def test_oversize_raw_input_exits_2(repo: Path) -> None:
    result = run(repo, "put", "-", input=b"x" * (MAX_BLOCK_SIZE + 1))
    assert_error(result, 2, f"error: -: input is larger than {MAX_BLOCK_SIZE} bytes")


def test_raw_input_at_the_limit_is_accepted(repo: Path) -> None:
    result = run(repo, "put", "-", input=b"x" * MAX_BLOCK_SIZE)
    assert result.exit_code == 0, result.stderr


def test_oversize_dag_cbor_block_exits_2(repo: Path) -> None:
    blob = base64.b64encode(b"\x00" * MAX_BLOCK_SIZE).decode()
    text = json.dumps({"big": {"/": {"bytes": blob}}}).encode()
    result = run(repo, "put", "--codec", "dag-cbor", "-", input=text)
    assert_error(result, 2, "-byte block size limit")
    assert f"exceeds the {MAX_BLOCK_SIZE}-byte block size limit" in result.stderr


def test_unreadable_input_file_exits_2(repo: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    assert_error(run(repo, "put", str(missing)), 2, f"error: cannot read {missing}: No such file")


def test_unknown_codec_is_a_usage_error(repo: Path) -> None:
    result = run(repo, "put", "--codec", "dag-pb", "-", input=b"x")
    assert result.exit_code == 2
    assert "'dag-pb' is not one of 'raw', 'dag-cbor'" in result.stderr
