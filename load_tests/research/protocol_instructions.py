"""Instructions a request on the in-protocol HTTP path, counted by valgrind: a measure that noise cannot move.

    python -m load_tests.research.protocol_instructions --tree before=/tmp/old --tree after=. [--format v2_binary]
        [--model tabular] [--bare]

Runs ``protocol_cpu`` (the server's request path in one process, no sockets) under ``valgrind --tool=callgrind``
twice per tree, for 640 and 3,200 requests after the same warm-up, and divides the difference of the two
instruction totals by the 2,560 requests between them: start-up, imports and warm-up cancel out. Counts move
by well under 1 % from run to run, where CPU time on a shared machine moves 10-25 %, so a cut of a few hundred
instructions shows. Instructions are not time (a cache miss costs more than an add), so a cut is confirmed in
time by the socket benchmarks (``batchserve bench --floor-only``). Needs valgrind (Debian's ``valgrind``).
Each tree is a checkout (``git archive COMMIT | tar -x -C DIR``) holding ``load_tests/research/protocol_cpu.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FEW, MANY = 640, 3200


def instructions(tree: Path, requests: int, fmt: str, model: str = "tabular", bare: bool = False) -> int:
    """Instructions valgrind counted for a whole ``protocol_cpu`` run of ``requests`` requests from ``tree``."""
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m",
         "load_tests.research.protocol_cpu", "--format", fmt, "--model", model, "--requests", str(requests),
         "--repeats", "1", *(["--bare"] if bare else [])],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"},
        capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(f"valgrind counted nothing for {tree}: {run.stderr[-2000:]}")
    return int(found.group(1))


def per_request(tree: Path, fmt: str, model: str = "tabular", bare: bool = False) -> int:
    with ThreadPoolExecutor(2) as pool:  # the two runs of a tree side by side: one core each
        few, many = pool.map(lambda n: instructions(tree, n, fmt, model, bare), (FEW, MANY))
    return (many - few) // (MANY - FEW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR: a checkout to count")
    parser.add_argument("--format", default="v2_binary", choices=["v2_binary", "v2_json", "tfserving_json"])
    parser.add_argument("--model", default="tabular", help="a synthetic model of load_tests/harness/synthetic.py")
    parser.add_argument("--bare", action="store_true", help="also count the floor: the bare handler of batchserve "
                        "bench on uvicorn's own protocol (protocol_cpu --bare), from the first tree")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    for tree in args.tree:
        name, _, folder = tree.partition("=")
        count = per_request(Path(folder).resolve(), args.format, args.model)
        print(f"{name:12s} {args.model:16s} {args.format:15s} {count:8d} instructions a request", flush=True)
    if args.bare:
        count = per_request(Path(args.tree[0].partition("=")[2]).resolve(), args.format, args.model, bare=True)
        print(f"{'bare handler':12s} {args.model:16s} {args.format:15s} {count:8d} instructions a request")


if __name__ == "__main__":
    main()
