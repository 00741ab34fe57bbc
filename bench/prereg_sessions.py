#!/usr/bin/env python3
"""Carry the pre-registered ten-seed run (bench/prereg10.py) across sessions whose machine is replaced.

Only what is committed to main survives from one session to the next, so the run's finished seeds are
committed (their compare.json and report files, no model weights) under
bench/results/runs/prereg10_mnist5k/seeds/sN/, and a new session puts them back where the pinned run looks
for them. The run itself is unchanged: each seed is exactly `prereg10.command(seed)` from the checkout
pinned at the registration's commit; this file only chooses which seeds run now.

    python bench/prereg_sessions.py setup              # the pinned worktree (/work/prereg) + the finished seeds
    python bench/prereg_sessions.py run 3 4            # those seeds, one process each, in the background
    python bench/prereg_sessions.py save               # finished seeds -> main's committed tree
    python bench/prereg_sessions.py pack 0 1           # unfinished seeds' resume state (weights) -> carry/

A seed that is not finished when the session ends either starts over in a later one, or, when `pack` kept
its resume state (OUT.state/, the shared reference cache) under carry/ (tar.gz, committed), continues
there: `setup` unpacks it (stop the seed's process first: SIGSTOP or kill; its entries are written
atomically, so what is on disk is a consistent set of finished entries). DEVIATIONS.md names each restart
and each seed continued on another machine. carry/ is removed from the tree once the run is done.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

MAIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PINNED = "9c0236b"  # bench/preregistration.md's commit
WORKTREE = "/work/prereg"
KEPT = os.path.join(MAIN, "bench", "results", "runs", "prereg10_mnist5k", "seeds")
CARRY = os.path.join(MAIN, "bench", "results", "runs", "prereg10_mnist5k", "carry")
SKIP = (".pt", ".pth", ".npz", ".npy")  # weights and arrays stay out of git


def pinned():
    sys.path.insert(0, WORKTREE)
    import bench.prereg10 as P  # noqa: E402 (the pinned copy)
    assert os.path.dirname(os.path.dirname(os.path.abspath(P.__file__))) == WORKTREE, P.__file__
    return P


def setup() -> int:
    if not os.path.isdir(WORKTREE):
        subprocess.check_call(["git", "worktree", "add", "--detach", WORKTREE, PINNED], cwd=MAIN)
    head = subprocess.check_output(["git", "rev-parse", "--short=7", "HEAD"], cwd=WORKTREE, text=True).strip()
    if head != PINNED:
        print(f"prereg_sessions: {WORKTREE} is at {head}, not the registration's {PINNED}", file=sys.stderr)
        return 2
    venv = os.path.join(WORKTREE, ".venv")
    if not os.path.exists(venv):
        os.symlink(os.path.join(MAIN, ".venv"), venv)
    # the native CKA extension as installed for main (csrc/ is unchanged since the pinned commit: checked here)
    if subprocess.call(["git", "diff", "--quiet", PINNED, "HEAD", "--", "csrc", "setup.py"], cwd=MAIN) != 0:
        print("prereg_sessions: csrc/ changed since the pinned commit; build the extension in the worktree",
              file=sys.stderr)
        return 2
    for f in os.listdir(os.path.join(MAIN, "cnr_fast")):
        if f.startswith("_C.") and f.endswith(".so"):
            shutil.copy2(os.path.join(MAIN, "cnr_fast", f), os.path.join(WORKTREE, "cnr_fast", f))
    link = os.path.join(MAIN, "bench", ".prereg")
    P = pinned()
    os.makedirs(P.WORK, exist_ok=True)
    if not os.path.lexists(link):
        os.symlink(P.WORK, link)
    for name in sorted(os.listdir(CARRY)) if os.path.isdir(CARRY) else []:  # state carried from a session
        if name.endswith(".tar.gz") and not os.path.exists(os.path.join(P.WORK, name[:-len(".tar.gz")])):
            subprocess.check_call(["tar", "-xzf", os.path.join(CARRY, name), "-C", P.WORK])
            print(f"unpacked {name}")
    for name in sorted(os.listdir(KEPT)) if os.path.isdir(KEPT) else []:
        dst = os.path.join(P.WORK, name)
        if not os.path.exists(os.path.join(dst, "compare.json")):
            shutil.copytree(os.path.join(KEPT, name), dst, dirs_exist_ok=True)
    print({s: "done" if P.done(s) else "to run" for s in P.SEEDS})
    return 0


def run(seeds: list[int]) -> int:
    P = pinned()
    bad = [s for s in seeds if s not in P.SEEDS or P.done(s)]
    if bad:
        print(f"prereg_sessions: seeds {bad} are not registered or are done", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": WORKTREE}
    for s in seeds:
        log = open(os.path.join(P.WORK, f"s{s}.log"), "a")
        p = subprocess.Popen(P.command(s), stdout=log, stderr=subprocess.STDOUT, cwd=WORKTREE, env=env,
                             start_new_session=True)
        print(f"seed {s}: pid {p.pid}: {' '.join(P.command(s))}")
    return 0


def save() -> int:
    P = pinned()
    for s in P.SEEDS:
        src, dst = P.seed_dir(s), os.path.join(KEPT, f"s{s}")
        if not P.done(s) or os.path.exists(os.path.join(dst, "compare.json")):
            continue
        shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n.endswith(SKIP)])
        print(f"kept seed {s} in {os.path.relpath(dst, MAIN)}")
    return 0


def running(out_dir: str) -> list[int]:
    """The pids of live, not stopped, processes whose command line writes to `out_dir` (`--out out_dir`)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("T", "t", "Z") and any(a == "--out" and b == out_dir for a, b in zip(argv, argv[1:])):
            pids.append(int(pid))
    return pids


def pack(seeds: list[int]) -> int:
    """The resume state of unfinished seeds, and the reference cache, as tar.gz under carry/ (to commit).
    Refused while a seed's process still runs: what it writes after the pack would be missing from it."""
    P = pinned()
    live = {s: running(P.seed_dir(s)) for s in seeds}
    if any(live.values()):
        print("prereg_sessions: still running: " + ", ".join(f"seed {s} (pid {' '.join(map(str, p))})"
                                                          for s, p in live.items() if p)
              + "; stop them first (kill -STOP PID), then pack", file=sys.stderr)
        return 2
    os.makedirs(CARRY, exist_ok=True)
    names = [f"s{s}.state" for s in seeds if not P.done(s) and os.path.isdir(P.seed_dir(s) + ".state")]
    for name in names + ["cache"]:
        out = os.path.join(CARRY, name + ".tar.gz")
        subprocess.check_call(["tar", "--exclude=.*.tmp", "-czf", out + ".tmp", "-C", P.WORK, name])
        os.replace(out + ".tmp", out)
        print(f"packed {name}: {os.path.getsize(out) / 1e6:.1f} MB")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("setup", "run", "save", "pack"))
    p.add_argument("seeds", nargs="*", type=int)
    a = p.parse_args(argv)
    if a.what in ("run", "pack"):
        return {"run": run, "pack": pack}[a.what](a.seeds)
    return {"setup": setup, "save": save}[a.what]()


if __name__ == "__main__":
    sys.exit(main())
