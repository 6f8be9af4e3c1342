"""Which scanner reads which file, decided by file name alone (before anything is read)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from typing import Any, Literal

from sentinel.rules import RuleSet
from sentinel.scanners import config, deps
from sentinel.scanners.base import DecodeError, Outcome, decode
from sentinel.scanners.imports import scan_python

FileKind = Literal[
    "python",
    "requirements",
    "pyproject",
    "pipfile",
    "pipfile-lock",
    "toml-lock",
    "setup-cfg",
    "toml",
    "yaml",
    "ini",
    "dotenv",
    "dockerfile",
]

_REQUIREMENTS = re.compile(r"(requirements.*\.(txt|in|lock)|constraints.*\.txt)", re.IGNORECASE)
_PYLOCK = re.compile(r"pylock(\.[^./]+)?\.toml")
_TOML_LOCKS = {"poetry.lock", "uv.lock", "pdm.lock"}

__all__ = ["FileKind", "Outcome", "classify", "scan_file"]


def classify(parts: tuple[str, ...]) -> FileKind | None:
    """The kind of a file from its path parts relative to the scan root, or None to skip."""
    name = parts[-1]
    lower = name.lower()
    parent = parts[-2].lower() if len(parts) > 1 else ""
    kind: FileKind | None = None
    if lower.endswith(".py"):
        kind = "python"
    elif name == "pyproject.toml":
        kind = "pyproject"
    elif name == "Pipfile":
        kind = "pipfile"
    elif name == "Pipfile.lock":
        kind = "pipfile-lock"
    elif name in _TOML_LOCKS or _PYLOCK.fullmatch(name):
        kind = "toml-lock"
    elif name == "setup.cfg":
        kind = "setup-cfg"
    elif _REQUIREMENTS.fullmatch(name) or (
        parent == "requirements" and lower.endswith((".txt", ".in"))
    ):
        kind = "requirements"
    elif lower.endswith(".toml"):
        kind = "toml"
    elif lower.endswith((".yml", ".yaml")):
        kind = "yaml"
    elif lower.endswith((".ini", ".cfg")):
        kind = "ini"
    elif lower == ".env" or lower.startswith(".env.") or lower.endswith(".env"):
        kind = "dotenv"
    elif (
        lower in {"dockerfile", "containerfile"}
        or lower.startswith("dockerfile.")
        or lower.endswith(".dockerfile")
    ):
        kind = "dockerfile"
    return kind


def scan_file(kind: FileKind, path: str, data: bytes, rules: RuleSet) -> Outcome:
    """Scan one file's bytes. Never raises for bad content: problems become errors."""
    if kind == "python":
        return scan_python(path, data, rules)
    out = Outcome(path)
    try:
        text = decode(data)
    except DecodeError as exc:
        out.error(str(exc))
        return out
    if kind in _TOML_KINDS:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            out.error(f"invalid TOML: {exc}", _toml_error_line(str(exc)))
            return out
        for scanner in _TOML_KINDS[kind]:
            out.merge(scanner(path, doc, text, rules))
    elif kind in ("setup-cfg", "ini"):
        parser = config.parse_ini(path, text, out)
        if parser is not None:
            out.merge(config.scan_ini_values(path, text, rules))
            if kind == "setup-cfg":
                out.merge(deps.scan_setup_cfg(path, parser, text, rules))
    else:
        out.merge(_TEXT_KINDS[kind](path, text, rules))
    return out


_TomlScanner = Callable[[str, dict[str, Any], str, RuleSet], Outcome]
_TOML_KINDS: dict[str, tuple[_TomlScanner, ...]] = {
    "pyproject": (deps.scan_pyproject, config.scan_toml_values),
    "pipfile": (deps.scan_pipfile, config.scan_toml_values),
    "toml-lock": (deps.scan_toml_lock,),
    "toml": (config.scan_toml_values,),
}
_TEXT_KINDS: dict[str, Callable[[str, str, RuleSet], Outcome]] = {
    "requirements": deps.scan_requirements,
    "pipfile-lock": deps.scan_pipfile_lock,
    "yaml": config.scan_yaml,
    "dotenv": config.scan_dotenv,
    "dockerfile": config.scan_dockerfile,
}


def _toml_error_line(message: str) -> int | None:
    match = re.search(r"\(at line (\d+)", message)
    return int(match.group(1)) if match else None
