"""`qflow step run`: run a step module locally, exactly as a node's sandbox would.

Exit codes: 0 the step succeeded (its output JSON on stdout); 1 the step failed (one
`error: <kind>: <message>` line on stderr); 2 usage or I/O error (unreadable module or
input, invalid JSON input, bad option values, an invalid capability token).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from qflow_node.cli.errors import EXIT_CHECK_FAILED, CliError, fail
from qflow_node.codec import raw_block
from qflow_node.sandbox import (
    ZERO_SEED,
    Authorizer,
    Limits,
    Sandbox,
    StepResult,
    SubnetPolicy,
    parse_duration,
    parse_size,
)
from qflow_node.sandbox.jsontext import parse_json
from qflow_node.sandbox.limits import format_bytes
from qflow_node.store import MemoryBlockStore

# Inputs are stored as blocks too; nothing larger can reach a step on a node.
MAX_INPUT = 1 << 20
_DEFAULTS = SubnetPolicy().defaults


def _converter(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback turning an option's text into a value, or a usage error (exit 2)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise CliError(f"{param.opts[0]}: {exc}") from None

    return callback


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))  # 1_000_000 reads like the docs
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{text!r} must be a positive integer")
    return value


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{text!r} is not hexadecimal bytes (e.g. 00ff…)") from None


@click.group("step", epilog="Exit codes: 0 ok, 1 the step failed, 2 usage or I/O error.")
def step_group() -> None:
    """Run WebAssembly step modules (see docs/steps.md for the ABI)."""


@step_group.command(
    "run", epilog="Exit codes: 0 the step succeeded, 1 the step failed, 2 usage or I/O error."
)
# Paths are plain strings: an unreadable one is reported as one `error:` line, exit 2.
@click.argument("module", metavar="MODULE.wasm")
@click.option("--input", "input_text", metavar="JSON", help="The step's input JSON. [default: {}]")
@click.option(
    "--input-file",
    metavar="FILE",
    help="Read the input JSON from FILE (`-` for stdin).",
)
@click.option("--cap", "token", metavar="TOKEN", help="A capability token granting host functions.")
@click.option(
    "--authority",
    metavar="DID",
    envvar="QFLOW_AUTHORITY",
    help="The did:key that signs capability tokens (with --cap). [env: QFLOW_AUTHORITY]",
)
@click.option(
    "--fuel",
    metavar="N",
    callback=_converter(_count),
    help=f"CPU budget in fuel units.  [default: {_DEFAULTS.describe('fuel')}]",
)
@click.option(
    "--memory",
    metavar="SIZE",
    callback=_converter(parse_size),
    help=f"Memory limit, e.g. 64MiB.  [default: {_DEFAULTS.describe('memory')}]",
)
@click.option(
    "--timeout",
    metavar="DURATION",
    callback=_converter(parse_duration),
    help=f"Wall-clock limit, e.g. 2s or 500ms.  [default: {_DEFAULTS.describe('timeout')}]",
)
@click.option(
    "--output-limit",
    metavar="SIZE",
    callback=_converter(parse_size),
    help=f"Largest output allowed, e.g. 64KiB.  [default: {_DEFAULTS.describe('output')}]",
)
@click.option(
    "--seed",
    metavar="HEX",
    callback=_converter(_hex),
    default=ZERO_SEED.hex(),
    show_default="32 zero bytes",
    help="Seed of the step's random_get, as hex.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON report (output, usage, failure)."
)
def run_command(
    *,
    module: str,
    input_text: str | None,
    input_file: str | None,
    token: str | None,
    authority: str | None,
    fuel: int | None,
    memory: int | None,
    timeout: float | None,
    output_limit: int | None,
    seed: bytes,
    as_json: bool,
) -> None:
    """Run MODULE.wasm (a WASI command module) on the input and print its output JSON.

    The step runs as on a node: no files, env, args or network; fixed clocks; random
    bytes from --seed; host functions only as far as --cap grants them. On failure the
    failure kind and message are printed as `error: <kind>: <message>`.
    """
    wasm = _read_module(Path(module))
    input_json = _read_input(input_text, None if input_file is None else Path(input_file))
    limits = Limits(
        fuel=fuel if fuel is not None else _DEFAULTS.fuel,
        memory=memory if memory is not None else _DEFAULTS.memory,
        timeout=timeout if timeout is not None else _DEFAULTS.timeout,
        output=output_limit if output_limit is not None else _DEFAULTS.output,
    )
    authorizer = _authorizer(token, authority) if token is not None else None
    blocks = MemoryBlockStore()
    block = raw_block(wasm)
    blocks.put(block)
    with Sandbox(blocks) as sandbox:
        result = sandbox.run(block.cid, input_json, limits=limits, authorizer=authorizer, seed=seed)
    _report(result, as_json)


def _read_module(path: Path) -> bytes:
    limit = MemoryBlockStore().max_block_size
    try:
        with path.open("rb") as fh:
            wasm = fh.read(limit + 1)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    if len(wasm) > limit:
        fail(
            f"{path} is larger than {format_bytes(limit)}: a step module is one raw block of "
            "at most that size (strip debug info, e.g. `-s` or wasm-opt)"
        )
    return wasm


def _read_input(text: str | None, path: Path | None) -> bytes:
    if text is not None and path is not None:
        fail("give the input with --input or --input-file, not both")
    if path is not None:
        try:
            if str(path) == "-":
                data = sys.stdin.buffer.read(MAX_INPUT + 1)
            else:
                with path.open("rb") as fh:
                    data = fh.read(MAX_INPUT + 1)
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or exc}")
        where = str(path)
    else:
        data = (text if text is not None else "{}").encode()
        where = "--input"
    if len(data) > MAX_INPUT:
        fail(f"{where}: the input is larger than {format_bytes(MAX_INPUT)}")
    try:
        parse_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        fail(f"{where}: the input is not UTF-8")
    except ValueError as exc:
        fail(f"{where}: the input is not one JSON value: {exc}")
    return data


def _authorizer(token: str, authority: str | None) -> Authorizer:
    if authority is None:
        fail("--cap needs --authority DID (or QFLOW_AUTHORITY): the key that signs tokens")
    # Imported here: only steps run with a token pay for Biscuit.
    from qflow_node.core.capability import CapabilityError, StepAuthorizer, parse_token
    from qflow_node.identity.keys import IdentityError, public_key_from_identity

    try:
        key = public_key_from_identity(authority)
    except IdentityError as exc:
        fail(f"--authority: {exc}")
    try:
        parsed = parse_token(token.strip(), key)
    except CapabilityError as exc:
        fail(f"--cap: invalid capability token: {exc}")
    return StepAuthorizer.for_step(parsed, now=int(time.time()))


def _report(result: StepResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    elif result.output is not None:
        out = sys.stdout.buffer
        out.write(result.output if result.output.endswith(b"\n") else result.output + b"\n")
        out.flush()
    if result.failure is not None:
        fail(str(result.failure), EXIT_CHECK_FAILED)
