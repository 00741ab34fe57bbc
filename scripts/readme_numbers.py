#!/usr/bin/env python3
"""README.md and docs/*.md from their templates (README.in.md, docs/*.in.md) and the committed result files
(bench/results/): every number the pages quote from a result JSON is a placeholder in a template, and this is
the one script that fills them.

    python scripts/readme_numbers.py           # write README.md and every docs/NAME.md (atomically)
    python scripts/readme_numbers.py --check   # exit 1 with a diff when a page is not what they give

Edit README.in.md and docs/NAME.in.md, never README.md or docs/NAME.md; tests/test_readme_numbers.py runs the
check in CI. A docs/NAME.md without its docs/NAME.in.md fails the check too (every page is generated).

Placeholders, `{{...}}` on one line of the template, fields separated by ':':

    {{ALIAS:PATH}}, {{ALIAS:PATH:FMT}}    the value at PATH in the file ALIASES[ALIAS], formatted with
                                          Python's format spec FMT (a list: its items joined by ' / ')
    {{HELPER:ALIAS:PATH[:ALIAS:PATH][:FMT]}}   a derived value, see HELPERS
    {{table:NAME}}                        a whole table (TABLES; the functions in bench/findings_table.py)
    {{count:FILE:NAME}}                   the number of items of the list literal `NAME = [...]` in FILE
    {{lacking:KEY[,KEY...]}}              the committed result files (every *.json under bench/results/ but a
                                          run's config.json) in which none of the KEYs holds a non-null value at
                                          any depth, as `path`, `path` relative to bench/results/ ("none" if none)

PATH is keys separated by '/', each taken whole (dots and dashes included: `methods/cnr-raw/probe_acc.L4`);
an integer indexes a list; '*' takes every item of a list or dict (the result is a list); `[key=value]`
keeps the items of a list (of dicts) whose key prints as value, `[key~regex]` those where the regex
matches (a list again: follow it with '*' or an index). The numeric helpers (range, min, max, maxabs)
skip nulls inside a list, so `methods/*/forget_acc/p_vs_cnr` works though CNR's own p is null.

Method names in paths are looked up in the files, so a renamed or missing method fails with the keys
that are there. A name that is reused for another method does not fail: `rl` meant CNR's reset on
real forget images in files written before that control was renamed `cnr-real` (those files carry a
`renamed` note), and means the random-labelling baseline since. Read a file's note before quoting it.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "README.in.md"
README = "README.md"
DOCS = "docs"
RESULTS = "bench/results"

ALIASES = {
    "cmp": "bench/results/runs/compare_mnist5k/compare.json",
    "att": "bench/results/runs/attacks_mnist5k/compare.json",
    "dflt": "bench/results/runs/default_mnist5k/results.json",
    "dcfg": "bench/results/runs/default_mnist5k/config.json",
    "abl": "bench/results/runs/ablate_mnist5k/ablate.json",
    "ablold": "bench/results/runs/ablate_mnist5k_before_issue15/ablate.json",
    "multi": "bench/results/runs/multiclass_mnist5k/multiclass.json",
    "vri": "bench/results/validation_rule_impact.json",
    "comp": "bench/results/compile_cpu.json",
    "ampc": "bench/results/amp_cpu.json",
    "cont": "bench/results/runs/continual_mnist5k_issue28/merged/continual.json",
    "contpre28": "bench/results/runs/continual_mnist5k/continual.json",
    "contold": "bench/results/runs/continual_mnist5k_before_issue15/continual.json",
    "avit": "bench/results/runs/any_model_timm_vit/compare.json",
    "amob": "bench/results/runs/any_model_tv_mobilenet_v2/compare.json",
    "view": "bench/results/runs/report_view_mnist5k/results.json",
    "vith": "bench/results/runs/vit_heads_digits/results.json",
    "e40": "bench/results/runs/cost_vs_retrain_e40_cpu.json",
    "e40old": "bench/results/runs/cost_vs_retrain_e40_cpu_before_issue15.json",
    "e80": "bench/results/runs/cost_vs_retrain_e80_cpu.json",
    "e80old": "bench/results/runs/cost_vs_retrain_e80_cpu_before_issue15.json",
    "refinit": "bench/results/runs/reference_init_mnist5k.json",
    "stages": "bench/results/cpu_stages_cpu.json",
    "thr": "bench/results/threads_cpu.json",
    "pfc": "bench/results/preflight_calibration.json",
    "ddp": "bench/results/ddp_cpu.json",
    "p10": "bench/results/runs/prereg10_mnist5k/compare.json",
    "pre": "bench/results/prereg10_analysis.json",
    "agree": "bench/results/ddp_agree_cpu.json",
    "costm": "bench/results/cost_model.json",
    "roof": "bench/results/roofline_sm90.json",
    "means": "bench/results/class_means_cpu.json",
    "cka": "bench/results/cka_cpu.json",
    "knn": "bench/results/knn_cpu.json",
}


class PlaceholderError(ValueError):
    """A placeholder that cannot be filled; the message names the placeholder, where it is and why."""


def _num(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{what} is {v!r}, not a number")
    return v


def _flat(v):
    return [x for item in v for x in _flat(item)] if isinstance(v, list) else [v]


def _nums(v, what):
    """The numbers of a value or list; nulls inside a list (e.g. CNR's own p against CNR, from '*') are skipped."""
    items = _flat(v)
    if isinstance(v, list):
        items = [x for x in items if x is not None]
    if not items:
        raise ValueError(f"{what} is an empty list (or holds only nulls)")
    return [_num(x, what) for x in items]


def _fmt(v, spec):
    if isinstance(v, list):
        return " / ".join(_fmt(x, spec) for x in v)
    return format(v, spec)


def h_ci(refs, spec, path=""):
    """'mean [ci_low, ci_high]' of a {"mean", "ci_low", "ci_high"} summary (FMT default .2f); the interval of
    a measure that lies in [0, 1] (named by the PATH) within [0, 1] (stats.within_unit)."""
    (s,) = refs
    if not isinstance(s, dict) or not {"mean", "ci_low", "ci_high"} <= s.keys():
        raise TypeError(f"needs a dict with mean, ci_low and ci_high, got {str(s)[:80]}")
    from cnr_fast.experiments.stats import within_unit

    s = within_unit(s, path)
    spec = spec or ".2f"
    return f"{format(s['mean'], spec)} [{format(s['ci_low'], spec)}, {format(s['ci_high'], spec)}]"


def h_range(refs, spec):
    """'lo-hi' over a list (or several refs); one value when both print the same (FMT default .2f)."""
    vals = [x for r in refs for x in _nums(r, "a range item")]
    spec = spec or ".2f"
    lo, hi = format(min(vals), spec), format(max(vals), spec)
    return lo if lo == hi else f"{lo}-{hi}"


def h_min(refs, spec):
    """The smallest value of a list (or of several refs)."""
    return format(min(x for r in refs for x in _nums(r, "a min item")), spec)


def h_max(refs, spec):
    """The largest value of a list (or of several refs)."""
    return format(max(x for r in refs for x in _nums(r, "a max item")), spec)


def h_maxabs(refs, spec):
    """The largest absolute value of a list (or of several refs)."""
    return format(max(abs(x) for r in refs for x in _nums(r, "a maxabs item")), spec)


def h_sum(refs, spec):
    """The sum of a list (or of several refs); FMT default: as Python prints it."""
    return format(sum(x for r in refs for x in _nums(r, "a sum item")), spec)


def h_ratio(refs, spec):
    """First value / second value."""
    a, b = refs
    return format(_num(a, "the numerator") / _num(b, "the denominator"), spec)


def h_minutes(refs, spec):
    """Seconds as minutes (FMT default .0f)."""
    (s,) = refs
    return format(_num(s, "the seconds") / 60, spec or ".0f")


def h_hmin(refs, spec):
    """Seconds as 'H h MM min' (or 'M min' under an hour)."""
    (s,) = refs
    m = round(_num(s, "the seconds") / 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"


def h_join(refs, spec):
    """The items of a list joined by ', '."""
    (v,) = refs
    if not isinstance(v, list):
        raise TypeError(f"needs a list, got {v!r}")
    return ", ".join(format(x, spec) for x in v)


def _separation_keys(refs, want: bool):
    (v,) = refs
    if not isinstance(v, dict) or not all(isinstance(x, dict) and "separates" in x for x in v.values()):
        raise TypeError("needs a compare.json `separation` dict (metric: {..., 'separates': bool})")
    keys = [k for k, x in v.items() if bool(x["separates"]) is want]
    if not keys:
        raise ValueError(f"no metric with separates = {want}")
    return ", ".join(f"`{k}`" for k in keys)


def h_count_keys(refs, spec):
    """The number of keys of a dict (or items of a list)."""
    (v,) = refs
    if not isinstance(v, (dict, list)):
        raise TypeError(f"needs a dict or a list, got {type(v).__name__}")
    return str(len(v))


def h_others(refs, spec):
    """The number of keys of a dict (or items of a list) but one: ablate's variants other than full CNR."""
    n = int(h_count_keys(refs, spec))
    if n < 1:
        raise ValueError("needs at least one key")
    return str(n - 1)


def h_keys(refs, spec):
    """The keys of a dict (or the items of a list), each as `key`, joined by ', '."""
    (v,) = refs
    if not isinstance(v, (dict, list)):
        raise TypeError(f"needs a dict or a list, got {type(v).__name__}")
    return ", ".join(f"`{k}`" for k in v)


def h_separating(refs, spec):
    """The metrics of a `separation` dict that separate retrained from original, as `a`, `b`, ..."""
    return _separation_keys(refs, True)


def h_nonseparating(refs, spec):
    """The metrics of a `separation` dict that do not separate retrained from original."""
    return _separation_keys(refs, False)


# name: (function, number of ALIAS:PATH references; None = one or more)
HELPERS = {"ci": (h_ci, 1), "range": (h_range, None), "min": (h_min, None), "max": (h_max, None),
           "maxabs": (h_maxabs, None), "sum": (h_sum, None), "ratio": (h_ratio, 2), "minutes": (h_minutes, 1), "hmin": (h_hmin, 1),
           "join": (h_join, 1), "separating": (h_separating, 1), "count_keys": (h_count_keys, 1), "nonseparating": (h_nonseparating, 1),
           "keys": (h_keys, 1), "others": (h_others, 1)}


def _tables():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench import findings_table as ft

    # name: (alias of the file, function of its data)
    return {"default_run": ("dflt", ft.run_table),
            "default_printout": ("dflt", ft.run_printout),
            "measures": ("dflt", ft.measures_table),
            "glance": ("cmp", ft.glance_table),
            "compare_findings": ("cmp", ft.compare_table),
            "compare_choices": ("cmp", ft.choices_table),
            "attacks": ("att", ft.attacks_table),
            "attacks_verdict": ("att", ft.verdict_table),
            "ablate": ("abl", ft.ablate_table),
            "multiclass": ("multi", ft.multiclass_table),
            "continual": ("cont", ft.continual_table),
            "prereg_summary": ("pre", ft.prereg_summary),
            "prereg_answers": ("pre", ft.prereg_answers),
            "prereg_vs_retrained": ("pre", ft.prereg_vs_retrained),
            "prereg_vs_cnr": ("pre", ft.prereg_vs_cnr),
            "prereg_full": ("pre", ft.prereg_full),
            "prereg_choices": ("p10", ft.choices_table),
            "prereg_verdict": ("p10", ft.verdict_table)}


RESERVED = {"table", "count", "lacking", *HELPERS}
assert not RESERVED & ALIASES.keys(), "an alias may not be named like a helper"


def lookup(data, path: str, file: str):
    """The value at PATH ('/'-separated keys, integer list indices, '*' for every item) in data."""
    if not path:
        raise ValueError("empty path")
    segs = path.split("/")
    if any(s == "" for s in segs):
        raise ValueError(f"bad path {path!r}: empty key (a '/' too many)")

    def walk(node, i, where):
        if i == len(segs):
            return node
        seg = segs[i]
        here = "/".join(segs[: i + 1])
        if seg.startswith("[") and seg.endswith("]"):  # [key=value] / [key~regex]: the items that match
            m = re.fullmatch(r"\[([^=~\]]+)([=~])(.*)\]", seg)
            if not m:
                raise ValueError(f"bad filter {seg!r} in {path!r}: write [key=value] or [key~regex]")
            if not isinstance(node, list):
                raise ValueError(f"filter {seg!r} at {here!r} in {file}: {where or 'the top'} is a "
                                 f"{type(node).__name__}, not a list")
            key, op, want = m.groups()
            hits = [x for x in node if isinstance(x, dict) and key in x
                    and (str(x[key]) == want if op == "=" else re.search(want, str(x[key])))]
            if not hits:
                raise KeyError(f"no item of {where or 'the top'} in {file} matches {seg}")
            return walk(hits, i + 1, here)
        if seg == "*":
            if isinstance(node, dict):
                return [walk(v, i + 1, here) for v in node.values()]
            if isinstance(node, list):
                return [walk(v, i + 1, here) for v in node]
            raise ValueError(f"'*' at {here!r} in {file}: {where or 'the top'} is a {type(node).__name__}, "
                             f"not a list or dict")
        if isinstance(node, dict):
            if seg not in node:
                keys = ", ".join(map(str, list(node)[:40]))
                raise KeyError(f"key {seg!r} not found at {where or 'the top'} of {file} (keys there: {keys})")
            return walk(node[seg], i + 1, here)
        if isinstance(node, list):
            if not re.fullmatch(r"-?\d+", seg):
                raise ValueError(f"bad path {path!r}: {where or 'the top'} of {file} is a list, so {seg!r} "
                                 f"must be an integer index")
            k = int(seg)
            if not -len(node) <= k < len(node):
                raise IndexError(f"index {k} out of range at {where or 'the top'} of {file} "
                                 f"(a list of {len(node)})")
            return walk(node[k], i + 1, here)
        raise ValueError(f"bad path {path!r}: {where} in {file} is {node!r}, which has no key {seg!r}")

    return walk(data, 0, "")


def count_list(file: Path, name: str) -> int:
    """Items of the module-level list literal `name = [...]` in a Python file."""
    for node in ast.parse(file.read_text()).body:
        if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets)
                and isinstance(node.value, (ast.List, ast.Tuple))):
            return len(node.value.elts)
    raise KeyError(f"no list literal {name} = [...] at the top level of {file}")


def _holds(node, keys) -> bool:
    """Whether any of keys holds a non-null value anywhere in node (dicts and lists, at any depth)."""
    if isinstance(node, dict):
        return any((k in keys and v is not None) or _holds(v, keys) for k, v in node.items())
    if isinstance(node, list):
        return any(_holds(x, keys) for x in node)
    return False


def lacking(root: Path, keys: set[str]) -> list[str]:
    """The committed result files (bench/results/**/*.json, runs' config.json left out) where no key of keys
    holds a value, relative to bench/results/, sorted."""
    base = root / RESULTS
    out = []
    for p in sorted(base.rglob("*.json")):
        if p.name == "config.json":
            continue
        if not _holds(json.loads(p.read_text()), keys):
            out.append(p.relative_to(base).as_posix())
    return out


class Renderer:
    def __init__(self, aliases: dict[str, str] | None = None, root: Path | None = None, tables: dict | None = None):
        self.aliases = dict(ALIASES if aliases is None else aliases)
        self.root = Path(ROOT if root is None else root)
        self.tables = tables
        self._data: dict[str, object] = {}

    def data(self, alias: str):
        if alias not in self.aliases:
            raise KeyError(f"unknown alias {alias!r} (aliases: {', '.join(sorted(self.aliases))})")
        if alias not in self._data:
            path = self.root / self.aliases[alias]
            try:
                self._data[alias] = json.loads(path.read_text())
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.aliases[alias]} (alias {alias!r}) does not exist") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.aliases[alias]} (alias {alias!r}) is not valid JSON: {e}") from None
        return self._data[alias]

    def ref(self, alias: str, path: str):
        return lookup(self.data(alias), path, self.aliases.get(alias, alias))

    def fill(self, body: str) -> str:
        f = body.split(":")
        head = f[0]
        if head == "table":
            if len(f) != 2:
                raise ValueError("write {{table:NAME}}")
            tables = self.tables if self.tables is not None else _tables()
            if f[1] not in tables:
                raise KeyError(f"unknown table {f[1]!r} (tables: {', '.join(sorted(tables))})")
            alias, fn = tables[f[1]]
            data = self.data(alias)
            try:
                return fn(data)
            except (KeyError, IndexError, TypeError) as e:
                what = f"key {e.args[0]!r} missing" if isinstance(e, KeyError) and e.args else str(e)
                raise ValueError(f"table {f[1]!r} from {self.aliases[alias]}: {what} (read by "
                                 f"bench/findings_table.py)") from None
        if head == "count":
            if len(f) != 3:
                raise ValueError("write {{count:FILE:NAME}}")
            return str(count_list(self.root / f[1], f[2]))
        if head == "lacking":
            if len(f) != 2 or not f[1].strip():
                raise ValueError("write {{lacking:KEY[,KEY...]}}")
            files = lacking(self.root, {k.strip() for k in f[1].split(",")})
            return ", ".join(f"`{x}`" for x in files) if files else "none"
        if head in HELPERS:
            fn, arity = HELPERS[head]
            rest = f[1:]
            n = arity if arity is not None else len(rest) // 2
            if n < 1 or len(rest) not in (2 * n, 2 * n + 1):
                want = "one or more ALIAS:PATH" if arity is None else f"{arity} ALIAS:PATH"
                raise ValueError(f"helper {head!r} takes {want} and an optional format, got {len(rest)} fields")
            refs = [self.ref(rest[2 * i], rest[2 * i + 1]) for i in range(n)]
            spec = rest[2 * n] if len(rest) == 2 * n + 1 else ""
            return fn(refs, spec, rest[1]) if head == "ci" else fn(refs, spec)
        if len(f) not in (2, 3):
            raise ValueError("write {{ALIAS:PATH}} or {{ALIAS:PATH:FMT}} (or a helper, a table, a count)")
        v = self.ref(f[0], f[1])
        spec = f[2] if len(f) == 3 else ""
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"the value is {v}")
        if isinstance(v, dict):
            raise TypeError(f"the value is a dict (keys: {', '.join(list(v)[:20])}); the path must reach a value")
        return _fmt(v, spec)

    def render(self, template: str, source: str = TEMPLATE) -> str:
        out, pos = [], 0

        def literal(start, end):
            text = template[start:end]
            if "{{" in text:  # ('}}' alone is ordinary text: JSON examples end with it)
                line = template.count("\n", 0, start + text.index("{{")) + 1
                raise PlaceholderError(f"{source}:{line}: an unclosed '{{{{' (a placeholder is {{{{...}}}} on one "
                                       f"line)")
            out.append(text)

        for m in re.finditer(r"\{\{(.*?)\}\}", template):
            literal(pos, m.start())
            line = template.count("\n", 0, m.start()) + 1
            body = m.group(1)
            if "{{" in body:
                raise PlaceholderError(f"{source}:{line}: a stray '{{{{' inside {{{{{body}}}}}")
            try:
                out.append(self.fill(body.strip()))
            except Exception as e:  # noqa: BLE001 - every failure is reported with the placeholder
                msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
                raise PlaceholderError(f"{source}:{line}: {{{{{body}}}}}: {msg}") from None
            pos = m.end()
        literal(pos, len(template))
        return "".join(out)


def render(template: str, aliases: dict[str, str] | None = None, root: Path | None = None, source: str = TEMPLATE,
           tables: dict | None = None) -> str:
    """The README text that `template` and the result files give."""
    return Renderer(aliases, root, tables).render(template, source)


def expected(root: Path | None = None) -> str:
    """README.md as README.in.md and the result files under root give it."""
    root = Path(ROOT if root is None else root)
    return render((root / TEMPLATE).read_text(), root=root)


def pages(root: Path | None = None) -> list[tuple[str, str]]:
    """(template, page) pairs relative to root: README.in.md -> README.md, then docs/NAME.in.md -> docs/NAME.md."""
    root = Path(ROOT if root is None else root)
    out = [(TEMPLATE, README)]
    docs = root / DOCS
    if docs.is_dir():
        out += [(f"{DOCS}/{p.name}", f"{DOCS}/{p.name[: -len('.in.md')]}.md") for p in sorted(docs.glob("*.in.md"))]
    return out


def orphans(root: Path | None = None) -> list[str]:
    """docs/NAME.md files that no docs/NAME.in.md generates (hand-written pages the check would not cover)."""
    root = Path(ROOT if root is None else root)
    docs = root / DOCS
    if not docs.is_dir():
        return []
    made = {page for _, page in pages(root)}
    return [f"{DOCS}/{p.name}" for p in sorted(docs.glob("*.md"))
            if not p.name.endswith(".in.md") and f"{DOCS}/{p.name}" not in made]


def expected_pages(root: Path | None = None) -> dict[str, str]:
    """Every generated page (README.md, docs/NAME.md) as its template and the result files under root give it."""
    root = Path(ROOT if root is None else root)
    r = Renderer(root=root)
    return {page: r.render((root / tpl).read_text(), tpl) for tpl, page in pages(root)}


def diff(have: str, want: str, page: str = README, template: str = TEMPLATE) -> str:
    return "".join(difflib.unified_diff(have.splitlines(keepends=True), want.splitlines(keepends=True),
                                        f"{page} (committed)", f"{page} (from {template} and the files)"))


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff if a page differs")
    args = p.parse_args(argv)
    try:
        wants = expected_pages()
    except PlaceholderError as e:
        print(f"readme_numbers: error: {e}", file=sys.stderr)
        return 2
    templates = dict((page, tpl) for tpl, page in pages())
    stale = []
    for page, want in wants.items():
        path = ROOT / page
        have = path.read_text() if path.exists() else ""
        if have == want:
            continue
        stale.append(page)
        if args.check:
            sys.stdout.write(diff(have, want, page, templates[page]))
        else:
            write_atomic(path, want)
            print(f"readme_numbers: wrote {page}")
    if args.check:
        bad = 0
        if stale:
            print(f"readme_numbers: {', '.join(stale)} differ(s) from the template(s) + the result files; edit "
                  f"the template ({', '.join(templates[s] for s in stale)}) and run `python scripts/readme_numbers.py`",
                  file=sys.stderr)
            bad = 1
        for page in orphans():
            print(f"readme_numbers: {page} has no template {page[:-len('.md')]}.in.md (every page is generated)",
                  file=sys.stderr)
            bad = 1
        if not bad:
            print(f"readme_numbers: {', '.join(wants)} up to date")
        return bad
    for page in orphans():
        print(f"readme_numbers: warning: {page} has no template {page[:-len('.md')]}.in.md", file=sys.stderr)
    if not stale:
        print(f"readme_numbers: {', '.join(wants)} already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
