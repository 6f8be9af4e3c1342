"""`qflow cap issue|attenuate|inspect|verify` through the real command group."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from jsonschema import Draft202012Validator

from qflow_node.cli.main import qflow
from qflow_node.core.capability import Grants, issue, parse_token
from qflow_node.core.capability.testing import OTHER_AUTHORITY
from qflow_node.identity.store import load_actor_key
from qflow_node.repo import RepoPaths

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "capability.v1.json"
VALIDATOR = Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
FETCH_ARGS = (
    "--op", "http.fetch",
    "--arg", "host=api.example.com",
    "--arg", "method=GET",
    "--arg", "url=https://api.example.com/orders",
    "--arg", "bytes=10",
)  # fmt: skip


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(qflow, list(args), input=input, catch_exceptions=False)


def assert_error(result: Result, code: int, fragment: str) -> None:
    """Exit `code`, one `error: …` line on stderr naming the problem, nothing on stdout."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    assert run("init", "--repo", str(root)).exit_code == 0
    assert run("id", "new", "authority", "--repo", str(root)).exit_code == 0
    return root


def authority_key(repo: Path) -> bytes:
    return load_actor_key(RepoPaths(repo), "authority").public_key


def issue_cli(repo: Path, *extra: str) -> str:
    result = run(
        "cap", "issue", "--repo", str(repo), "--authority", "authority",
        "--op", "http.fetch", "--op", "log", "--op", "state.get",
        "--host", "api.example.com", "--method", "GET", "--key-prefix", "orders/",
        "--max-bytes", "100", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout.strip()


def cap(repo: Path, command: str, *args: str, input: str | None = None) -> Result:
    return run("cap", command, "--repo", str(repo), *args, input=input)


# -- issue -----------------------------------------------------------------------------------


def test_issue_prints_a_token_signed_by_the_authority_actor(repo: Path) -> None:
    before = datetime.now(UTC)
    text = issue_cli(repo, "--ttl", "1h", "--timeout", "1500ms", "--trap-on-deny")
    scope = parse_token(text, authority_key(repo)).scope
    assert scope is not None
    assert scope.rights == {"http.fetch", "log", "state.get"}
    assert scope.hosts == {"api.example.com"}
    assert scope.methods == {"GET"}
    assert scope.prefix_sets == (frozenset({"orders/"}),)
    assert scope.codecs == frozenset()  # no block.put, no codecs
    assert (scope.max_bytes, scope.timeout_ms, scope.trap_on_deny) == (100, 1500, True)
    assert scope.expires is not None
    expected = (before + timedelta(hours=1)).timestamp()
    assert expected - 2 <= scope.expires <= expected + 2


def test_issue_with_a_fixed_expiry_and_without_one(repo: Path) -> None:
    fixed = parse_token(
        issue_cli(repo, "--expires", "2099-12-31T00:00:00+01:00"), authority_key(repo)
    )
    assert fixed.scope is not None
    assert fixed.scope.expires == int(datetime(2099, 12, 30, 23, tzinfo=UTC).timestamp())
    never = parse_token(issue_cli(repo, "--no-expiry"), authority_key(repo))
    assert never.scope is not None and never.scope.expires is None


def test_block_put_gets_both_codecs_unless_told(repo: Path) -> None:
    for extra, codecs in (((), {"raw", "dag-cbor"}), (("--codec", "raw"), {"raw"})):
        result = cap(
            repo, "issue", "--authority", "authority", "--op", "block.put", "--no-expiry", *extra
        )
        scope = parse_token(result.stdout.strip(), authority_key(repo)).scope
        assert scope is not None and scope.codecs == codecs


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--authority", "did:key:z6Mkfoo", "--op", "log", "--ttl", "1h"), "actor name, not a did"),
        (("--authority", "authority", "--ttl", "1h"), "at least one --op"),
        (("--authority", "authority", "--op", "log"), "give --expires or --ttl"),
        (("--authority", "authority", "--op", "log", "--ttl", "1h", "--no-expiry"), "contradicts"),
        (
            (
                "--authority",
                "authority",
                "--op",
                "log",
                "--ttl",
                "1h",
                "--expires",
                "2099-01-01T00:00:00Z",
            ),
            "not both",
        ),
        (
            ("--authority", "authority", "--op", "log", "--expires", "2001-01-01T00:00:00Z"),
            "not in the future",
        ),
        (
            ("--authority", "authority", "--op", "log", "--expires", "2099-01-01T00:00:00"),
            "no timezone",
        ),
        (("--authority", "authority", "--op", "log", "--expires", "tomorrow"), "not an ISO 8601"),
        (("--authority", "authority", "--op", "log", "--ttl", "1 hour"), "bad duration"),
        (("--authority", "authority", "--op", "log", "--ttl", "0s"), "must be positive"),
        (
            ("--authority", "authority", "--op", "http.fetch", "--ttl", "1h"),
            "needs at least one --host",
        ),
        (("--authority", "authority", "--op", "state.set", "--ttl", "1h"), "needs --key-prefix"),
        (
            (
                "--authority",
                "authority",
                "--op",
                "http.fetch",
                "--host",
                "a b",
                "--method",
                "GET",
                "--ttl",
                "1h",
            ),
            "not a host name",
        ),
        (("--authority", "nobody", "--op", "log", "--ttl", "1h"), "no actor named 'nobody'"),
        (("--authority", "Bad/Name", "--op", "log", "--ttl", "1h"), "invalid actor name"),
    ],
)
def test_issue_usage_errors(repo: Path, args: tuple[str, ...], fragment: str) -> None:
    assert_error(cap(repo, "issue", *args), 2, fragment)


def test_issue_rejects_an_unknown_operation(repo: Path) -> None:
    result = cap(repo, "issue", "--authority", "authority", "--op", "shell.exec", "--ttl", "1h")
    assert result.exit_code == 2
    assert "shell.exec" in result.stderr


# -- attenuate -------------------------------------------------------------------------------


def test_attenuate_by_name_did_stdin_and_file(repo: Path, tmp_path: Path) -> None:
    text = issue_cli(repo, "--ttl", "1h")
    did = run("id", "show", "authority", "--repo", str(repo)).stdout.strip()
    by_name = cap(repo, "attenuate", text, "--authority", "authority", "--step", "fetch")
    by_did = cap(repo, "attenuate", "-", "--authority", did, "--flow", "orders", input=text + "\n")
    token_file = tmp_path / "token"
    token_file.write_text(text + "\n")
    by_file = cap(repo, "attenuate", f"@{token_file}", "--authority", did, "--op", "log")
    for result in (by_name, by_did, by_file):
        assert result.exit_code == 0, result.output
        assert parse_token(result.stdout.strip(), authority_key(repo)).block_count == 2
    scope = parse_token(by_file.stdout.strip(), authority_key(repo)).scope
    assert scope is not None and scope.rights == {"log"}


def test_attenuate_every_restriction(repo: Path) -> None:
    text = issue_cli(repo, "--ttl", "2h")
    result = cap(
        repo, "attenuate", text, "--authority", "authority",
        "--exec", "bafyexec", "--flow", "orders", "--step", "fetch", "--ttl", "10m",
        "--op", "http.fetch", "--host", "api.example.com", "--method", "GET",
        "--key-prefix", "orders/2026/", "--max-bytes", "10", "--max-response-bytes", "20",
        "--trap-on-deny",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scope = parse_token(result.stdout.strip(), authority_key(repo)).scope
    assert scope is not None
    assert scope.execs == {"bafyexec"}
    assert (scope.flows, scope.steps) == (frozenset({"orders"}), frozenset({"fetch"}))
    assert (scope.max_bytes, scope.max_response_bytes, scope.trap_on_deny) == (10, 20, True)
    assert scope.prefix_sets[-1] == {"orders/2026/"}


def test_attenuate_refuses_to_widen(repo: Path) -> None:
    text = issue_cli(repo, "--ttl", "1h")
    for args, fragment in (
        (("--host", "evil.example"), "cannot widen"),
        (("--op", "block.put"), "does not grant block.put"),
        (("--max-bytes", "1000"), "max_bytes is already 100"),
        (("--ttl", "2h"), "cannot widen: the token expires at"),
        ((), "nothing to attenuate"),
    ):
        assert_error(cap(repo, "attenuate", text, "--authority", "authority", *args), 2, fragment)


def test_attenuate_refuses_bad_tokens_with_exit_1(repo: Path) -> None:
    other = issue(OTHER_AUTHORITY, Grants.build(["log"]), expires=None)
    result = cap(repo, "attenuate", other, "--authority", "authority", "--step", "s")
    assert_error(result, 1, "wrong_authority: signed by")
    assert_error(
        cap(repo, "attenuate", "garbage!", "--authority", "authority", "--step", "s"),
        1,
        "malformed",
    )


def test_attenuate_io_and_authority_errors(repo: Path, tmp_path: Path) -> None:
    text = issue_cli(repo, "--ttl", "1h")
    missing = tmp_path / "absent"
    assert_error(
        cap(repo, "attenuate", f"@{missing}", "--authority", "authority", "--step", "s"),
        2,
        "cannot read token file",
    )
    assert_error(
        cap(repo, "attenuate", text, "--authority", "did:key:zNope", "--step", "s"), 2, "did:key"
    )
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    assert_error(
        cap(repo, "attenuate", f"@{binary}", "--authority", "authority", "--step", "s"),
        2,
        "not UTF-8",
    )


# -- inspect ---------------------------------------------------------------------------------


def test_inspect_shows_blocks_and_scope(repo: Path) -> None:
    text = issue_cli(repo, "--ttl", "1h")
    narrowed = cap(
        repo, "attenuate", text, "--authority", "authority", "--step", "fetch"
    ).stdout.strip()
    result = run("cap", "inspect", narrowed)
    assert result.exit_code == 0, result.output
    did = run("id", "show", "authority", "--repo", str(repo)).stdout.strip()
    assert f"authority: {did} (claimed, not verified)" in result.stdout
    assert "engine: compiled" in result.stdout
    assert '  right("http.fetch");' in result.stdout
    assert 'block 1:\n  check if step("fetch");' in result.stdout
    assert "  granted: http.fetch, state.get, log" in result.stdout
    assert "  step: fetch" in result.stdout


def test_inspect_json_follows_the_schema(repo: Path) -> None:
    text = issue_cli(repo, "--ttl", "1h")
    result = run("cap", "inspect", text, "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    VALIDATOR.validate(info)
    assert info["verified"] is False
    assert info["scope"]["granted"] == ["http.fetch", "state.get", "log"]
    assert info["blocks"][0]["checks"][0].startswith("check if time($t), $t < ")


def test_inspect_a_token_outside_the_vocabulary(repo: Path) -> None:
    from qflow_node.core.capability.testing import hand_written

    text = hand_written('right("log");\nrole("ops");\n')
    result = run("cap", "inspect", text)
    assert result.exit_code == 0
    assert "engine: biscuit" in result.stdout
    assert "outside the Qflow vocabulary" in result.stdout
    assert "authority: not named" in result.stdout


def test_inspect_malformed_is_exit_1(repo: Path) -> None:
    assert_error(run("cap", "inspect", "%%%"), 1, "malformed: the token is not base64url")
    assert_error(run("cap", "inspect", "-", input=""), 1, "malformed: the token is empty")


# -- verify ----------------------------------------------------------------------------------


def test_verify_a_valid_token_and_an_allowed_call(repo: Path) -> None:
    text = issue_cli(repo, "--ttl", "1h")
    result = cap(repo, "verify", text, "--authority", "authority")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("valid: issued by did:key:z6Mk")
    allowed = cap(repo, "verify", text, "--authority", "authority", *FETCH_ARGS)
    assert allowed.exit_code == 0, allowed.output
    assert "http.fetch allowed" in allowed.stdout


def test_verify_context_time_and_scope_rejections(repo: Path) -> None:
    text = issue_cli(repo, "--ttl", "1h")
    bound = cap(
        repo, "attenuate", text, "--authority", "authority", "--step", "fetch", "--flow", "orders"
    ).stdout.strip()
    authority = ("--authority", "authority")
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    for args, fragment in (
        (
            ("--step", "store", "--flow", "orders"),
            "not_for_this_step: the token is for step 'fetch'",
        ),
        (("--step", "fetch", "--flow", "refunds"), "not_for_this_flow"),
        (("--step", "fetch", "--flow", "orders", "--at", later), "expired: the token expired at"),
        (
            (
                "--step",
                "fetch",
                "--flow",
                "orders",
                "--op",
                "http.fetch",
                "--arg",
                "host=evil.example",
                "--arg",
                "method=GET",
                "--arg",
                "url=https://evil.example/",
                "--arg",
                "bytes=0",
            ),
            "host_not_allowed",
        ),
        (
            (
                "--step",
                "fetch",
                "--flow",
                "orders",
                "--op",
                "log",
                "--arg",
                "level=1",
                "--arg",
                "bytes=101",
            ),
            "limit_exceeded",
        ),
        (
            (
                "--step",
                "fetch",
                "--flow",
                "orders",
                "--op",
                "block.put",
                "--arg",
                "codec=raw",
                "--arg",
                "bytes=1",
            ),
            "not_granted",
        ),
        (
            ("--step", "fetch", "--flow", "orders", "--op", "log", "--arg", "level=1"),
            "bad_argument: log needs bytes",
        ),
    ):
        assert_error(cap(repo, "verify", bound, *authority, *args), 1, fragment)


def test_verify_rejects_forged_wrong_authority_and_malformed(repo: Path) -> None:
    text = issue_cli(repo, "--ttl", "1h")
    other = issue(OTHER_AUTHORITY, Grants.build(["log"]), expires=None)
    assert_error(cap(repo, "verify", other, "--authority", "authority"), 1, "wrong_authority")
    # Same length, one character changed in the signature area near the end.
    tampered = text[:-20] + ("A" if text[-20] != "A" else "B") + text[-19:]
    result = cap(repo, "verify", tampered, "--authority", "authority")
    assert result.exit_code == 1
    assert result.stderr.startswith(("error: forged:", "error: malformed:"))
    assert_error(
        cap(repo, "verify", "", "--authority", "authority"), 1, "malformed: the token is empty"
    )


def test_verify_json_verdicts(repo: Path) -> None:
    text = issue_cli(repo, "--ttl", "1h")
    ok = cap(repo, "verify", text, "--authority", "authority", "--json")
    assert ok.exit_code == 0
    assert json.loads(ok.stdout)["valid"] is True
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    refused = cap(repo, "verify", text, "--authority", "authority", "--json", "--at", later)
    assert refused.exit_code == 1
    verdict = json.loads(refused.stdout)
    assert (verdict["valid"], verdict["code"]) == (False, "expired")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--arg", "bytes=1"), "--arg needs --op"),
        (("--op", "log", "--arg", "bytes"), "expected NAME=VALUE"),
        (("--op", "log", "--arg", "bytes=-1"), "non-negative integer"),
        (("--op", "log", "--arg", "bytes=1", "--arg", "bytes=2"), "given twice"),
        (("--at", "noon"), "not an ISO 8601 time"),
        (("--step", 'a"b'), "quote"),
    ],
)
def test_verify_usage_errors(repo: Path, args: tuple[str, ...], fragment: str) -> None:
    text = issue_cli(repo, "--ttl", "1h")
    assert_error(cap(repo, "verify", text, "--authority", "authority", *args), 2, fragment)


def test_cap_help_lists_the_subcommands() -> None:
    result = run("cap", "--help")
    assert result.exit_code == 0
    for name in ("issue", "attenuate", "inspect", "verify"):
        assert name in result.stdout
