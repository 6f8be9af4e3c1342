"""Build the example steps (examples/steps/*.c) to wasm32-wasi modules, reproducibly.

The one place the compiler command lives: `make steps` (examples/steps/steps.mk) and
tests/sandbox/test_examples_build.py both run this script. The same sources and the same
ziglang version give byte-identical modules on any machine, in any directory.

    python examples/steps/build.py                 # rebuild all next to their sources
    python examples/steps/build.py --out DIR       # build into DIR instead
    python examples/steps/build.py --check         # build into a temp dir, compare with
                                                   # the committed .wasm files
    python examples/steps/build.py transform.c     # only some steps

The compiler is `<this python> -m ziglang cc` (PyPI `ziglang`), so run the script with
the interpreter of the environment that has ziglang installed (e.g. .venv/bin/python).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

STEPS_DIR = Path(__file__).resolve().parent

# The committed .wasm files are what this exact ziglang release builds; any other
# release may legitimately produce different bytes. steps.mk and README.md repeat it.
ZIGLANG_VERSION = "0.17.0"

# Headers every step may include; a change to one rebuilds every step.
HEADERS = ("qflow.h", "qjson.h")

CFLAGS: tuple[str, ...] = (
    "-target",
    "wasm32-wasi",  # WASI preview 1 command module: exports _start and memory
    "-mcpu=generic",  # fixed feature set (never "native")
    "-std=gnu17",
    "-O2",
    "-g0",  # no debug info ...
    "-s",  # ... and no symbols
    "-fno-ident",  # no compiler version string in the output
    f"-ffile-prefix-map={STEPS_DIR}=.",  # no build directory in the output
    "-Wall",
    "-Wextra",
    "-Wl,--strip-all",  # no name/producers custom sections
    "-Wl,-z,stack-size=65536",  # 64 KiB C stack: keeps initial memory small
)

# Environment variables that change what the compiler sees; removed for the build.
SCRUBBED_ENV = (
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
    "LIBRARY_PATH",
    "COMPILER_PATH",
    "CCC_OVERRIDE_OPTIONS",
    "ZIG_LIB_DIR",  # another wasi-libc / compiler-rt than the pinned release's
)


class BuildError(Exception):
    """A step failed to build, or the toolchain is not the pinned one."""


def installed_ziglang() -> str | None:
    """The installed ziglang release, or None if it is not installed."""
    try:
        return importlib.metadata.version("ziglang")
    except importlib.metadata.PackageNotFoundError:
        return None


def sources(names: Sequence[str] = ()) -> list[Path]:
    """The step sources to build: the given names (with or without .c), else all."""
    if not names:
        return sorted(STEPS_DIR.glob("*.c"))
    found = []
    for name in names:
        path = STEPS_DIR / (Path(name).stem + ".c")
        if not path.is_file():
            raise BuildError(f"no such step source: {path}")
        found.append(path)
    return found


def compile_command(source: Path, output: Path) -> list[str]:
    """The compiler command line, run with cwd = STEPS_DIR."""
    return [
        sys.executable,
        "-m",
        "ziglang",
        "cc",
        *CFLAGS,
        source.name,
        "-o",
        str(output),
    ]


def build_one(source: Path, out_dir: Path) -> Path:
    """Build one step into out_dir/<name>.wasm, replacing it only if its bytes change."""
    output = out_dir / (source.stem + ".wasm")
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    with tempfile.TemporaryDirectory(prefix="qflow-steps-") as tmp:
        # Same file name in every build: the linker sees only the name, never the dir.
        built = Path(tmp) / output.name
        proc = subprocess.run(
            compile_command(source, built),
            cwd=STEPS_DIR,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not built.is_file():
            raise BuildError(f"{source.name}: compiler exit {proc.returncode}\n{proc.stderr}")
        if proc.stderr.strip():  # warnings: the examples must build cleanly
            raise BuildError(f"{source.name}: compiler warnings\n{proc.stderr}")
        data = built.read_bytes()
    if not output.is_file() or output.read_bytes() != data:
        output.write_bytes(data)
    return output


def build(
    names: Sequence[str] = (), out_dir: Path = STEPS_DIR, *, jobs: int | None = None
) -> list[Path]:
    """Build the steps into out_dir; returns the .wasm paths, in source order."""
    version = installed_ziglang()
    if version != ZIGLANG_VERSION:
        raise BuildError(
            f"ziglang {ZIGLANG_VERSION} is required for reproducible builds, found "
            f"{version or 'none'} (pip install ziglang=={ZIGLANG_VERSION})"
        )
    srcs = sources(names)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda s: build_one(s, out_dir), srcs))


def check_pin(version: str) -> None:
    """steps.mk passes its pinned version: it must be the one pinned here."""
    if version != ZIGLANG_VERSION:
        raise BuildError(f"steps.mk pins ziglang {version}, build.py pins {ZIGLANG_VERSION}")


def check(names: Sequence[str] = ()) -> list[str]:
    """Build into a temp dir; the names of the steps whose committed .wasm differs."""
    with tempfile.TemporaryDirectory(prefix="qflow-steps-check-") as tmp:
        differ = []
        for built in build(names, Path(tmp)):
            committed = STEPS_DIR / built.name
            if not committed.is_file() or committed.read_bytes() != built.read_bytes():
                differ.append(built.name)
        return differ


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="*", help="step sources (default: all *.c)")
    parser.add_argument("--out", type=Path, default=STEPS_DIR, help="output directory")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compilers")
    parser.add_argument(
        "--check", action="store_true", help="compare a fresh build with the committed files"
    )
    parser.add_argument(
        "--zig-version", help="fail unless this is the pinned ziglang version (steps.mk)"
    )
    args = parser.parse_args(argv)
    try:
        if args.zig_version is not None:
            check_pin(args.zig_version)
        if args.check:
            differ = check(args.steps)
            if differ:
                print("differ from a fresh build: " + " ".join(differ), file=sys.stderr)
                return 1
            print("committed .wasm files match a fresh build")
            return 0
        for path in build(args.steps, args.out, jobs=args.jobs):
            print(f"{path} {path.stat().st_size} bytes")
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
