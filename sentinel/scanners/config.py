"""Deployment and configuration files: YAML (docker-compose, Kubernetes, Helm values, CI),
TOML, INI, `.env` and Dockerfiles.

What is looked for: connection URLs with a central scheme in any value, and container
images (`image:` in YAML, `FROM` in Dockerfiles). YAML line numbers come from the
composed node marks; TOML values are located in the raw text; INI, `.env` and Dockerfile
are read line by line, so their lines are exact.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterator
from typing import Any

import yaml

from sentinel.rules import RuleSet
from sentinel.scanners.base import LineFinder, Outcome, match_urls

_TEMPLATE_IMAGE = re.compile(r"""^\s*(?:-\s+)?image:\s*["']?([^\s"'#{}]+)""")
_FROM = re.compile(r"^\s*FROM\s+(.*)$", re.IGNORECASE)


# --- TOML -------------------------------------------------------------------------------


def scan_toml_values(path: str, doc: dict[str, Any], text: str, rules: RuleSet) -> Outcome:
    """URLs in the string values of a parsed TOML document."""
    out = Outcome(path)
    finder = LineFinder(text)
    for value in _toml_strings(doc):
        for url, rule in match_urls(value, rules):
            line = finder.first(url.raw, f"{url.scheme}://")
            out.find(rule, line, "url", url.redacted)
    return out


def _toml_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _toml_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _toml_strings(item)


# --- YAML -------------------------------------------------------------------------------


def scan_yaml(path: str, text: str, rules: RuleSet) -> Outcome:
    out = Outcome(path)
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        if "{{" in text:
            # A Helm/Jinja template is not YAML until rendered; read it line by line instead.
            out.warn(
                f"not YAML but looks like a template ({exc.problem}); scanned line by line",
                line,
            )
            _scan_yaml_lines(out, text, rules)
        else:
            out.error(f"invalid YAML: {exc.problem or exc}", line)
        return out
    except (yaml.YAMLError, RecursionError) as exc:
        out.error(f"invalid YAML: {exc}")
        return out
    seen: set[int] = set()
    for document in documents:
        if document is not None:
            _walk_yaml(out, rules, document, seen)
    return out


def _walk_yaml(out: Outcome, rules: RuleSet, root: yaml.Node, seen: set[int]) -> None:
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:  # anchors and aliases share nodes; recursive ones would loop
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            _yaml_scalar(out, rules, node)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == "image":
                    _yaml_image(out, rules, value)
                stack.extend((key, value))


def _yaml_scalar(out: Outcome, rules: RuleSet, node: yaml.ScalarNode) -> None:
    value = node.value
    if not isinstance(value, str):
        return
    first = node.start_mark.line + 1
    for url, rule in match_urls(value, rules):
        # Literal block scalars keep their newlines and start on the line after `|`.
        line = first + 1 + value.count("\n", 0, url.start) if node.style == "|" else first
        out.find(rule, line, "url", url.redacted)


def _yaml_image(out: Outcome, rules: RuleSet, node: yaml.Node) -> None:
    reference: str | None = None
    if isinstance(node, yaml.ScalarNode):
        reference = node.value
    elif isinstance(node, yaml.MappingNode):
        # Helm values style: image: {registry: docker.io, repository: bitnami/kafka, tag: 3.7}
        fields = {
            k.value: v.value
            for k, v in node.value
            if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode)
        }
        repository = fields.get("repository")
        if isinstance(repository, str) and repository:
            registry = fields.get("registry")
            reference = f"{registry}/{repository}" if registry else repository
    if reference:
        rule = rules.match_image(reference)
        if rule is not None:
            out.find(rule, node.start_mark.line + 1, "image", reference)


def _scan_yaml_lines(out: Outcome, text: str, rules: RuleSet) -> None:
    for number, line in _lines(text, comment_prefixes=("#",)):
        image = _TEMPLATE_IMAGE.match(line)
        if image is not None:
            rule = rules.match_image(image.group(1))
            if rule is not None:
                out.find(rule, number, "image", image.group(1))
        _line_urls(out, rules, number, line)


# --- INI, .env, Dockerfile ----------------------------------------------------------------


def parse_ini(path: str, text: str, out: Outcome) -> configparser.RawConfigParser | None:
    """A parsed INI file, or None after recording an error that names the line."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.MissingSectionHeaderError as exc:
        out.error("invalid INI: text before the first [section] header", exc.lineno)
        return None
    except configparser.ParsingError as exc:
        line, content = exc.errors[0] if exc.errors else (None, "")
        out.error(f"invalid INI: cannot parse {content!r}", line)
        return None
    except configparser.Error as exc:
        out.error(f"invalid INI: {exc.message}", getattr(exc, "lineno", None))
        return None
    return parser


def scan_ini_values(path: str, text: str, rules: RuleSet) -> Outcome:
    """URLs on the non-comment lines of a (validated) INI file."""
    out = Outcome(path)
    for number, line in _lines(text, comment_prefixes=("#", ";")):
        _line_urls(out, rules, number, line)
    return out


def scan_dotenv(path: str, text: str, rules: RuleSet) -> Outcome:
    """`KEY=value` lines (optionally `export KEY=value`); commented lines are ignored."""
    out = Outcome(path)
    for number, line in _lines(text, comment_prefixes=("#",)):
        _line_urls(out, rules, number, line)
    return out


def scan_dockerfile(path: str, text: str, rules: RuleSet) -> Outcome:
    """`FROM [--platform=...] image[:tag] [AS name]` base images, and URLs in other lines."""
    out = Outcome(path)
    for number, line in _lines(text, comment_prefixes=("#",)):
        match = _FROM.match(line)
        if match is None:
            _line_urls(out, rules, number, line)
            continue
        words = [w for w in match.group(1).split() if not w.startswith("--")]
        if words:
            rule = rules.match_image(words[0])
            if rule is not None:
                out.find(rule, number, "image", words[0])
    return out


def _lines(text: str, comment_prefixes: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.lstrip().startswith(comment_prefixes):
            yield number, line


def _line_urls(out: Outcome, rules: RuleSet, number: int, line: str) -> None:
    for url, rule in match_urls(line, rules):
        out.find(rule, number, "url", url.redacted)
