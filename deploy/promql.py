"""Metric names in PromQL, in the dashboard and alert rules, and in docs/architecture.md.

The check "every expression uses only metrics the app exports" is a set difference::

    missing = deploy_metric_names() - documented_series_names()          # static (tests)
    missing = deploy_metric_names() - live_names                         # against a scrape

``live_names`` is the set of series names of a real ``/metrics`` scrape (e.g. from
:func:`scrape_series_names` on the text exposition), so the same functions serve the later
live check.

The PromQL reader is a small lexer, not a full parser: it knows selectors, label matchers,
ranges and subqueries, ``offset``/``@``, function calls, aggregations with
``by``/``without``, vector matching (``on``/``ignoring``/``group_left``/``group_right``),
string and number literals, and Grafana's template variables (``$__rate_interval``,
``${var}``, ``[[var]]``). It returns the metric names of the vector selectors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE_MD = REPO / "docs" / "architecture.md"
RULES_FILE = REPO / "deploy" / "prometheus" / "rules.yaml"
DASHBOARD_DIR = REPO / "deploy" / "grafana" / "dashboards"

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\])
  | (?P<number>(?:\d+(?:ms|[smhdwy]))+|0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],:@])
    """,
    re.VERBOSE,
)

# words that are never metric names where they appear as bare identifiers
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "start",
    "end",
}
_LABEL_LIST_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


class PromQLSyntaxError(ValueError):
    """The expression could not be tokenised or has unbalanced brackets."""


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise PromQLSyntaxError(f"cannot read PromQL at {pos}: {expr[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _matching(tokens: list[tuple[str, str]], i: int, open_: str, close: str) -> int:
    """Index of the bracket closing the one at ``i``."""
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j] == ("op", open_):
            depth += 1
        elif tokens[j] == ("op", close):
            depth -= 1
            if depth == 0:
                return j
    raise PromQLSyntaxError(f"unbalanced {open_!r}")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects, e.g. ``rate(a_total{x="1"}[5m]) / b`` -> {a_total, b}.

    Includes names given as ``{__name__="..."}`` matchers; regex name matchers are refused
    (:class:`PromQLSyntaxError`), since they cannot be checked against a list.
    """
    toks = _tokens(expr)
    _check_balanced(toks)
    names: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "op" and text == "{":
            end = _matching(toks, i, "{", "}")
            names |= _name_matchers(toks[i + 1 : end])
            i = end + 1
            continue
        if kind == "op" and text == "[":
            i = _matching(toks, i, "[", "]") + 1
            continue
        if kind == "ident":
            low = text.lower()
            if low in _LABEL_LIST_WORDS and nxt == ("op", "("):
                i = _matching(toks, i + 1, "(", ")") + 1
                continue
            if nxt == ("op", "(") or (
                nxt[0] == "ident" and nxt[1].lower() in {"by", "without"}
            ):  # function call, or aggregation (`sum(...)`, `sum by (l) (...)`)
                i += 1
                continue
            if low in _KEYWORDS:
                i += 1
                continue
            names.add(text)
        i += 1
    return names


def _check_balanced(tokens: list[tuple[str, str]]) -> None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for kind, text in tokens:
        if kind != "op":
            continue
        if text in "([{":
            stack.append(text)
        elif text in pairs and (not stack or stack.pop() != pairs[text]):
            raise PromQLSyntaxError(f"unbalanced {text!r}")
    if stack:
        raise PromQLSyntaxError(f"unclosed {stack[-1]!r}")


def _name_matchers(matchers: list[tuple[str, str]]) -> set[str]:
    out = set()
    for k in range(len(matchers) - 2):
        if matchers[k] == ("ident", "__name__"):
            op, value = matchers[k + 1][1], matchers[k + 2]
            if op != "=" or value[0] != "string":
                raise PromQLSyntaxError('only __name__="..." matchers can be checked')
            out.add(value[1][1:-1])
    return out


# --------------------------------------------------------------------------- the deploy files


def rule_expressions(path: Path = RULES_FILE) -> dict[str, str]:
    """``{alert or record name: expr}`` of a Prometheus rules file."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            out[rule.get("alert") or rule["record"]] = rule["expr"]
    return out


def _walk_targets(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str) and ("refId" in node or "datasource" in node):
            yield node["expr"]
        for key, value in node.items():
            if key == "templating" and isinstance(value, dict):
                for var in value.get("list", []):
                    query = var.get("query")
                    if var.get("type") == "query":
                        q = query.get("query") if isinstance(query, dict) else query
                        if isinstance(q, str) and q:
                            yield _template_query_expr(q)
                continue
            yield from _walk_targets(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_targets(item)


def _template_query_expr(query: str) -> str:
    """The PromQL inside a Grafana template query (``label_values(metric, label)`` etc.)."""
    m = re.fullmatch(
        r"\s*label_values\(\s*(.*?)\s*(?:,\s*[A-Za-z_][A-Za-z0-9_]*\s*)?\)\s*", query, re.DOTALL
    )
    if m:
        return m.group(1)
    m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.DOTALL)
    return m.group(1) if m else query


def dashboard_expressions(directory: Path = DASHBOARD_DIR) -> dict[str, str]:
    """``{"<file>#<n>": expr}`` for every PromQL query in the Grafana dashboards."""
    out = {}
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for n, expr in enumerate(_walk_targets(doc)):
            out[f"{path.name}#{n}"] = expr
    return out


def deploy_expressions() -> dict[str, str]:
    """Every PromQL expression in the alert rules and the dashboards, by where it is."""
    return {
        **{f"rules:{k}": v for k, v in rule_expressions().items()},
        **{f"dashboard:{k}": v for k, v in dashboard_expressions().items()},
    }


def deploy_metric_names() -> set[str]:
    """Every series name the dashboards and alert rules select."""
    names: set[str] = set()
    for expr in deploy_expressions().values():
        names |= promql_metric_names(expr)
    return names


# --------------------------------------------------------------------------- what is exported

_SUFFIXES = {
    "counter": ("",),  # names are documented with their _total suffix
    "gauge": ("",),
    "info": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def documented_metrics(path: Path = ARCHITECTURE_MD) -> dict[str, str]:
    """``{metric name: type}`` from the Metrics section of docs/architecture.md."""
    text = path.read_text(encoding="utf-8")
    start = text.find("## Metrics")
    if start < 0:
        raise ValueError(f"{path}: no '## Metrics' section")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else None]
    out: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("|"):  # table row: | `a`, `b` | type | labels |
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) < 2:
                continue
            kind = cells[1].split()[0].lower() if cells[1] else ""
            for name in re.findall(r"`(coldstream_[a-z0-9_]+)`", cells[0]):
                out[name] = kind
        else:  # prose: `coldstream_trainer_x{labels}` (gauge); a counter may omit its type
            for name, kind in re.findall(
                r"`(coldstream_[a-z0-9_]+)(?:\{[^}]*\})?`(?:\s*\(([a-z]+))?", line
            ):
                if kind not in _SUFFIXES and name.endswith("_total"):
                    kind = "counter"
                out[name] = kind
    for name, kind in out.items():
        if kind not in _SUFFIXES:
            raise ValueError(f"{path}: metric {name} has unknown type {kind!r}")
    return out


def series_names(metrics: dict[str, str]) -> set[str]:
    """The series names a scrape shows for ``{metric: type}`` (histograms: _bucket, _sum, _count)."""
    return {name + suffix for name, kind in metrics.items() for suffix in _SUFFIXES[kind]}


def documented_series_names(path: Path = ARCHITECTURE_MD) -> set[str]:
    """Series names the app exports according to docs/architecture.md."""
    return series_names(documented_metrics(path))


def scrape_series_names(exposition: str) -> set[str]:
    """Series names in a Prometheus text exposition (a ``/metrics`` body)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
            if m:
                names.add(m.group())
    return names


def unknown_metric_names(available: Iterable[str]) -> dict[str, set[str]]:
    """``{where: names not in available}`` for every deploy expression using one."""
    have = set(available)
    out = {}
    for where, expr in deploy_expressions().items():
        missing = promql_metric_names(expr) - have
        if missing:
            out[where] = missing
    return out
