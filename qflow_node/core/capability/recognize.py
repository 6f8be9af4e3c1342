"""Read printed blocks back into `AuthorityBlock` / `Restriction` — or give up.

Biscuit prints strings without escaping, so text alone could be misread (one string
`a", "b` prints like two). A reading is therefore only a proposal: `scope.compile_scope`
regenerates the blocks from it and keeps it only if the payloads are byte-identical.
Anything unexpected returns None, and the token is then authorized by Biscuit itself.
"""

from __future__ import annotations

import re
from typing import Final

from qflow_node.core.capability import vocabulary as v
from qflow_node.core.capability.datalog import AuthorityBlock, Grants, Restriction
from qflow_node.core.capability.errors import GrantError
from qflow_node.core.capability.instants import parse_rfc3339

_S: Final = f'"({v.SAFE_TEXT}*)"'
_SET: Final = f'\\{{("{v.SAFE_TEXT}*"(?:, "{v.SAFE_TEXT}*")*)\\}}'
_N: Final = r"(0|[1-9][0-9]{0,18})"
_DATE: Final = r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)"
_STRING_IN_SET: Final = re.compile(f'"({v.SAFE_TEXT}*)"')


def _pattern(template: str) -> re.Pattern[str]:
    """A regex matching a printed statement; `<S>` a string, `<SET>` a set of strings,
    `<N>` an integer, `<DATE>` a date, `<PREFIXES>` one or more starts_with alternatives."""
    regex = re.escape(template)
    for placeholder, group in (
        ("<SET>", _SET),
        ("<S>", _S),
        ("<N>", _N),
        ("<DATE>", _DATE),
        ("<PREFIXES>", f"((?: or key\\(\\$k\\), \\$k\\.starts_with\\({_S}\\))+)"),
    ):
        regex = regex.replace(placeholder, group)
    return re.compile(regex)


_TRAP: Final = "trap_on_deny(true);"
_EXPIRY: Final = _pattern("check if time($t), $t < <DATE>;")
_AUTHORITY_FACTS: Final = {
    name: _pattern(f"{name}(<S>);")
    for name in ("authority", "right", "host_allowed", "method_allowed", "key_prefix")
} | {"codec_allowed": _pattern("codec_allowed(<S>);")}
_AUTHORITY_INTS: Final = {
    name: _pattern(f"{name}(<N>);") for name in ("max_bytes", "max_response_bytes", "timeout_ms")
}
_CONTEXT: Final = {name: _pattern(f"check if {name}(<S>);") for name in ("exec", "flow", "step")}
_OPS: Final = _pattern("check if operation($op), <SET>.contains($op);")
_HOSTS: Final = _pattern(
    'check if operation($op), $op != "http.fetch" or host($h), <SET>.contains($h);'
)
_METHODS: Final = _pattern(
    'check if operation($op), $op != "http.fetch" or method($m), <SET>.contains($m);'
)
_CODECS: Final = _pattern(
    'check if operation($op), $op != "block.put" or codec($c), <SET>.contains($c);'
)
_PREFIXES: Final = _pattern("check if operation($op), !<SET>.contains($op)<PREFIXES>;")
_PREFIX_ALTERNATIVE: Final = re.compile(f" or key\\(\\$k\\), \\$k\\.starts_with\\({_S}\\)")
_REJECTS: Final = {
    name: _pattern(f"reject if {name}($b), $b > <N>;") for name in ("bytes", "response_bytes")
}


def _lines(source: str) -> list[str] | None:
    """The statements of a printed block, one per line; None if empty or repeated."""
    if not source.endswith("\n"):
        return None
    lines = source[:-1].split("\n")
    if "" in lines or len(set(lines)) != len(lines):
        return None
    return lines


def _strings(inner: str) -> list[str]:
    return _STRING_IN_SET.findall(inner)


def read_authority(source: str) -> AuthorityBlock | None:
    lines = _lines(source)
    if lines is None:
        return None
    facts: dict[str, list[str]] = {name: [] for name in _AUTHORITY_FACTS}
    ints: dict[str, int] = {}
    trap = False
    expires: int | None = None
    try:
        for line in lines:
            name = line.partition("(")[0]
            if line == _TRAP:
                trap = True
            elif match := _EXPIRY.fullmatch(line):
                if expires is not None:
                    return None
                expires = parse_rfc3339(match.group(1))
            elif name in _AUTHORITY_FACTS and (match := _AUTHORITY_FACTS[name].fullmatch(line)):
                facts[name].append(match.group(1))
            elif name in _AUTHORITY_INTS and (match := _AUTHORITY_INTS[name].fullmatch(line)):
                if name in ints:
                    return None
                ints[name] = int(match.group(1))
            else:
                return None
        if len(facts["authority"]) > 1:
            return None
        grants = Grants.build(
            facts["right"],
            hosts=facts["host_allowed"],
            methods=facts["method_allowed"],
            key_prefixes=facts["key_prefix"],
            codecs=facts["codec_allowed"],
            max_bytes=ints.get("max_bytes"),
            max_response_bytes=ints.get("max_response_bytes"),
            timeout_ms=ints.get("timeout_ms"),
            trap_on_deny=trap,
        )
    except GrantError:
        return None
    authority = facts["authority"][0] if facts["authority"] else None
    return AuthorityBlock(grants=grants, authority=authority, expires=expires)


def read_restriction(source: str) -> Restriction | None:
    lines = _lines(source)
    if lines is None:
        return None
    fields: dict[str, object] = {}

    def put(name: str, value: object) -> bool:
        if name in fields:
            return False
        fields[name] = value
        return True

    try:
        for line in lines:
            ok = False
            if line == _TRAP:
                ok = put("trap_on_deny", True)
            elif match := _EXPIRY.fullmatch(line):
                ok = put("expires", parse_rfc3339(match.group(1)))
            elif match := _OPS.fullmatch(line):
                ok = put("operations", v.value_set(_strings(match.group(1)), v.operation, "ops"))
            elif match := _HOSTS.fullmatch(line):
                ok = put("hosts", v.value_set(_strings(match.group(1)), v.host, "hosts"))
            elif match := _METHODS.fullmatch(line):
                ok = put("methods", v.value_set(_strings(match.group(1)), v.method, "methods"))
            elif match := _CODECS.fullmatch(line):
                ok = put("codecs", v.value_set(_strings(match.group(1)), v.codec, "codecs"))
            elif match := _PREFIXES.fullmatch(line):
                if frozenset(_strings(match.group(1))) != v.STATE_OPERATIONS:
                    return None
                prefixes = _PREFIX_ALTERNATIVE.findall(match.group(2))
                ok = put("key_prefixes", v.value_set(prefixes, v.key_prefix, "prefixes"))
            else:
                for name, pattern in _CONTEXT.items():
                    if match := pattern.fullmatch(line):
                        ok = put(name, v.label(match.group(1), name))
                        break
                for name, pattern in _REJECTS.items():
                    if match := pattern.fullmatch(line):
                        bound = v.byte_bound(int(match.group(1)), name)
                        ok = put("max_bytes" if name == "bytes" else "max_response_bytes", bound)
                        break
            if not ok:
                return None
    except GrantError:
        return None
    restriction = Restriction(**fields)  # type: ignore[arg-type]
    return None if restriction.is_empty() else restriction
