"""Merging results of one driver run over disjoint seeds (`--seed S --seeds 1` in separate processes)."""

from __future__ import annotations

from ..errors import UserError


def check_mergeable(results: list[dict], what: str, same: str, key=None) -> None:
    """Same `same` (read by `key`, default r[same]) and the same config up to the seed; disjoint seeds."""
    if not results:
        raise UserError("--merge: no result files given")
    key = key or (lambda r: r.get(same))
    first = results[0]
    for i, r in enumerate(results[1:], 2):
        if key(r) != key(first):
            raise UserError(f"{what} results to merge must have the same {same}: file 1 has {key(first)}, file {i} "
                            f"{key(r)}; merge only runs of one command that differ in --seed")
        diff = _differences({**first["config"], "seed": 0}, {**r["config"], "seed": 0})
        if diff:
            shown = "; ".join(f"{k}: {a!r} vs {b!r}" for k, a, b in diff[:4]) + (" ..." if len(diff) > 4 else "")
            raise UserError(f"{what} results to merge must have the same configuration but --seed; file 1 and file "
                            f"{i} differ in {shown}; rerun one of them with the other's settings")
    seeds = [s for r in results for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{what} results to merge must cover disjoint seeds; got seeds {seeds}")


def _differences(a, b, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, a's value, b's value) where two nested config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def concat_seeds(results: list[dict], lists: tuple[str, ...], dicts: tuple[str, ...],
                 optional: tuple[str, ...] = ()) -> dict:
    """The first result with its per-seed lists (and dicts of lists) extended by the others'. `optional`
    dicts of lists (written by later versions, or only with some flags) are merged where every result has
    them and left out where one lacks them (the first's alone would not cover the merged seeds)."""
    first = results[0]
    merged = {**first, "seeds": [s for r in results for s in r["seeds"]],
              "total_time_s": sum(r["total_time_s"] for r in results),
              "merged_from": [{"seeds": r["seeds"], "total_time_s": r["total_time_s"], "machine": r.get("machine")}
                              for r in results]}
    for key in ("per_seed_originals", "recipe_checks"):  # per-seed records written by later versions
        if all(key in r for r in results):
            lists = (*lists, key)
        else:
            merged.pop(key, None)
    for key in lists:
        merged[key] = [x for r in results for x in r[key]]
    for key in optional:
        if all(key in r for r in results):
            dicts = (*dicts, key)
        else:
            merged.pop(key, None)
    for key in dicts:
        merged[key] = {k: [x for r in results for x in r[key][k]] for k in first[key]}
    return merged
