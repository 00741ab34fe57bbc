"""Merging results of one driver run over disjoint seeds (`--seed S --seeds 1` in separate processes)."""

from __future__ import annotations

from ..errors import UserError


def check_mergeable(results: list[dict], what: str, same: str, key=None) -> None:
    """Same `same` (read by `key`, default r[same]) and the same config up to the seed; disjoint seeds."""
    if not results:
        raise UserError("--merge: no result files given")
    key = key or (lambda r: r.get(same))
    first = results[0]
    for r in results[1:]:
        if key(r) != key(first) or {**r["config"], "seed": 0} != {**first["config"], "seed": 0}:
            raise UserError(f"{what} results to merge must have the same {same} and configuration")
    seeds = [s for r in results for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{what} results to merge must cover disjoint seeds; got seeds {seeds}")


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
    if all("per_seed_originals" in r for r in results):
        lists = (*lists, "per_seed_originals")
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
