"""The rule set: loading and validating `rules.toml`, and exact-match lookups into it.

Scanners extract candidates (a distribution name, an import module, a URL scheme, a
container image, an AWS service name) and ask the `RuleSet` which rule, if any, claims
it. All lookups are dictionary hits on whole names or components, so `redistribute` can
never match `redis` and `my_kafka_notes` can never match `kafka`.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

SUPPORTED_VERSION = 1
PACKAGED_RULES = "sentinel/rules.toml"

_ID = re.compile(r"[a-z][a-z0-9_-]*\.[a-z0-9][a-z0-9._-]*")
_FAMILY = re.compile(r"[a-z][a-z0-9_-]*")
_DIST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_DIST_EXTRA = re.compile(
    r"(?P<dist>[A-Za-z0-9][A-Za-z0-9._-]*)\[(?P<extra>[A-Za-z0-9][A-Za-z0-9._-]*)\]"
)
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_SCHEME = re.compile(r"[a-z][a-z0-9.-]*")  # no "+": dialect+driver forms match per component
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._-]*(:[0-9]+)?(/[a-z0-9][a-z0-9._-]*)*")
_SERVICE = re.compile(r"[a-z0-9][a-z0-9-]*")

_RULE_KEYS = {
    "id",
    "family",
    "why",
    "distributions",
    "dist_extras",
    "imports",
    "url_schemes",
    "images",
    "aws_services",
}
_MATCHER_KEYS = ("distributions", "dist_extras", "imports", "url_schemes", "images", "aws_services")


class RulesError(ValueError):
    """The rules file cannot be read, is not TOML, or does not follow the schema."""


def normalize_dist(name: str) -> str:
    """PEP 503 normalised distribution name: `Foo.Bar_baz` -> `foo-bar-baz`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def normalize_extra(name: str) -> str:
    """PEP 685 normalised extra name (same rule as PEP 503)."""
    return normalize_dist(name)


def image_names(reference: str) -> list[str]:
    """The names a container image reference may be known by, most specific first.

    `docker.io/library/postgres:16@sha256:...` -> [`docker.io/library/postgres`,
    `library/postgres`, `postgres`]; `localhost:5000/bitnami/kafka` -> [..., `bitnami/kafka`].
    The tag and digest are dropped; a leading registry (it has a dot, a port, a `$`
    variable, or is `localhost`) is dropped too, so mirrors of a listed image still match.
    """
    ref = reference.strip().lower()
    ref = ref.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref = ref[:colon]
    ref = ref.strip("/")
    if not ref:
        return []
    names = [ref]
    parts = ref.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or "$" in first or first == "localhost"):
        names.append("/".join(parts[1:]))
    for name in list(names):
        if name.startswith("library/"):
            names.append(name[len("library/") :])
    return names


@dataclass(frozen=True)
class Rule:
    """One central dependency: its id, family, why it is central, and its matchers."""

    id: str
    family: str
    why: str
    distributions: tuple[str, ...] = ()
    dist_extras: tuple[tuple[str, str], ...] = ()
    imports: tuple[str, ...] = ()
    url_schemes: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    aws_services: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "family": self.family,
            "why": self.why,
            "distributions": list(self.distributions),
            "dist_extras": [f"{d}[{e}]" for d, e in self.dist_extras],
            "imports": list(self.imports),
            "url_schemes": list(self.url_schemes),
            "images": list(self.images),
            "aws_services": list(self.aws_services),
        }


class RuleSet:
    """A validated rule set with exact-match indexes for every kind of matcher."""

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        version: int = SUPPORTED_VERSION,
        aws_sdk_modules: Iterable[str] = (),
        aws_client_methods: Iterable[str] = (),
        source: str = "<rules>",
    ) -> None:
        self.version = version
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.aws_sdk_modules: tuple[str, ...] = tuple(aws_sdk_modules)
        self.aws_client_methods: frozenset[str] = frozenset(aws_client_methods)
        self.source = source
        self._by_id: dict[str, Rule] = {}
        self._dists: dict[str, Rule] = {}
        self._extras: dict[tuple[str, str], Rule] = {}
        self._imports: dict[str, Rule] = {}
        self._schemes: dict[str, Rule] = {}
        self._images: dict[str, Rule] = {}
        self._services: dict[str, Rule] = {}
        for rule in self.rules:
            if rule.id in self._by_id:
                raise RulesError(f"{source}: duplicate rule id {rule.id!r}")
            self._by_id[rule.id] = rule
            self._index(self._dists, rule, "distributions", map(normalize_dist, rule.distributions))
            self._index(self._extras, rule, "dist_extras", rule.dist_extras)
            self._index(self._imports, rule, "imports", rule.imports)
            self._index(self._schemes, rule, "url_schemes", rule.url_schemes)
            self._index(self._images, rule, "images", (image_names(i)[0] for i in rule.images))
            self._index(self._services, rule, "aws_services", rule.aws_services)

    def _index(self, index: dict[Any, Rule], rule: Rule, kind: str, keys: Iterable[Any]) -> None:
        # One name, one rule: two rules claiming the same name would make findings ambiguous.
        for key in keys:
            other = index.get(key)
            if other is not None and other is not rule:
                raise RulesError(
                    f"{self.source}: {kind} entry {key!r} is claimed by both {other.id!r} "
                    f"and {rule.id!r}"
                )
            index[key] = rule

    @property
    def ids(self) -> list[str]:
        return [rule.id for rule in self.rules]

    @property
    def families(self) -> list[str]:
        return sorted({rule.family for rule in self.rules})

    def get(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    def match_distribution(self, name: str) -> Rule | None:
        return self._dists.get(normalize_dist(name))

    def match_extras(self, name: str, extras: Iterable[str]) -> list[tuple[Rule, str]]:
        """Rules claimed by `name[extra]` for each extra, e.g. `celery[redis]` -> broker.redis."""
        dist = normalize_dist(name)
        found: list[tuple[Rule, str]] = []
        for extra in extras:
            rule = self._extras.get((dist, normalize_extra(extra)))
            if rule is not None:
                found.append((rule, extra))
        return found

    def match_import(self, module: str) -> Rule | None:
        """The rule claiming `module` or one of its dotted prefixes (`a`, `a.b`, `a.b.c`)."""
        parts = module.split(".")
        for end in range(1, len(parts) + 1):
            rule = self._imports.get(".".join(parts[:end]))
            if rule is not None:
                return rule
        return None

    def match_url_scheme(self, scheme: str) -> Rule | None:
        """`postgresql+asyncpg` matches through its `postgresql` component."""
        for component in scheme.lower().split("+"):
            rule = self._schemes.get(component)
            if rule is not None:
                return rule
        return None

    def match_image(self, reference: str) -> Rule | None:
        for name in image_names(reference):
            rule = self._images.get(name)
            if rule is not None:
                return rule
        return None

    def match_aws_service(self, service: str) -> Rule | None:
        return self._services.get(service)

    def is_aws_sdk_module(self, module: str) -> bool:
        return any(module == m or module.startswith(m + ".") for m in self.aws_sdk_modules)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "rules": [rule.to_dict() for rule in self.rules],
        }


def load_rules(path: Path | None = None) -> RuleSet:
    """Load and validate a rules file; `None` means the packaged `sentinel/rules.toml`.

    Raises `RulesError` naming the file and what is wrong.
    """
    if path is None:
        return default_rules()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read rules file: {_reason(exc)}") from exc
    return parse_rules(text, source=str(path))


@functools.cache
def default_rules() -> RuleSet:
    """The packaged rule set, parsed once per process."""
    text = resources.files("sentinel").joinpath("rules.toml").read_text(encoding="utf-8")
    return parse_rules(text, source=PACKAGED_RULES)


def parse_rules(text: str, *, source: str = "<rules>") -> RuleSet:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: invalid TOML: {exc}") from exc
    unknown = sorted(set(doc) - {"version", "aws", "rule"})
    if unknown:
        raise RulesError(f"{source}: unknown top-level key(s): {', '.join(unknown)}")
    version = doc.get("version")
    if version is None:
        raise RulesError(f"{source}: missing `version` (this sentinel reads version = 1)")
    if version != SUPPORTED_VERSION or isinstance(version, bool):
        raise RulesError(
            f"{source}: unsupported rules version {version!r} (this sentinel reads version = 1)"
        )
    aws = doc.get("aws", {})
    if not isinstance(aws, dict):
        raise RulesError(f"{source}: [aws] must be a table")
    unknown = sorted(set(aws) - {"sdk_modules", "client_methods"})
    if unknown:
        raise RulesError(f"{source}: [aws]: unknown key(s): {', '.join(unknown)}")
    sdk_modules = _names(aws, "sdk_modules", _MODULE, f"{source}: [aws]")
    client_methods = _names(aws, "client_methods", _MODULE, f"{source}: [aws]")
    raw_rules = doc.get("rule")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RulesError(f"{source}: no rules (expected one or more [[rule]] tables)")
    rules = [_parse_rule(raw, number, source) for number, raw in enumerate(raw_rules, start=1)]
    return RuleSet(
        rules,
        version=version,
        aws_sdk_modules=sdk_modules,
        aws_client_methods=client_methods,
        source=source,
    )


def _parse_rule(raw: object, number: int, source: str) -> Rule:
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: rule #{number} is not a table")
    rule_id = raw.get("id")
    where = f"{source}: rule #{number}" + (f" ({rule_id!r})" if isinstance(rule_id, str) else "")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise RulesError(f"{where}: unknown key(s): {', '.join(unknown)}")
    for key in ("id", "family", "why"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise RulesError(f"{where}: missing or empty `{key}` (a non-empty string)")
    assert isinstance(rule_id, str)
    family: str = raw["family"]
    why: str = raw["why"].strip()
    if not _FAMILY.fullmatch(family):
        raise RulesError(f"{where}: family {family!r} must be lowercase letters, digits, - or _")
    if not _ID.fullmatch(rule_id) or not rule_id.startswith(family + "."):
        raise RulesError(f"{where}: id must look like '{family}.<name>' (lowercase)")
    if "\n" in why:
        raise RulesError(f"{where}: `why` must be a single line")
    if not any(raw.get(key) for key in _MATCHER_KEYS):
        raise RulesError(f"{where}: no matchers (give at least one of {', '.join(_MATCHER_KEYS)})")
    extras: list[tuple[str, str]] = []
    for item in _names(raw, "dist_extras", _DIST_EXTRA, where):
        match = _DIST_EXTRA.fullmatch(item)
        assert match is not None
        extras.append((normalize_dist(match["dist"]), normalize_extra(match["extra"])))
    return Rule(
        id=rule_id,
        family=family,
        why=why,
        distributions=tuple(normalize_dist(d) for d in _names(raw, "distributions", _DIST, where)),
        dist_extras=tuple(extras),
        imports=_names(raw, "imports", _MODULE, where),
        url_schemes=_names(raw, "url_schemes", _SCHEME, where),
        images=_names(raw, "images", _IMAGE, where),
        aws_services=_names(raw, "aws_services", _SERVICE, where),
    )


def _names(
    table: Mapping[str, Any], key: str, pattern: re.Pattern[str], where: str
) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list):
        raise RulesError(f"{where}: `{key}` must be a list of strings")
    for item in value:
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise RulesError(f"{where}: `{key}` entry {item!r} is not a valid name")
    return tuple(value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
