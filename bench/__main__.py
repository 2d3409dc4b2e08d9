"""Run the benchmarks: ``python -m bench [NAME ...] [OPTIONS]`` (``make bench`` runs them all).

Every module named in ``BENCHES`` exposes ``main(argv) -> dict``; it prints its own
table and writes ``bench/results/<name>.json``. Options after the names go to each
selected benchmark (for example ``python -m bench registry --models 10``).
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHES = ["registry", "ipc", "serving", "metrics", "training", "llm", "llm_engine"]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    names: list[str] = []
    while args and not args[0].startswith("-"):
        names.append(args.pop(0))
    if args[:1] in (["-h"], ["--help"]) and not names:
        print(__doc__)
        print(f"benchmarks: {', '.join(BENCHES)}")
        return 0
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    for name in names or BENCHES:
        module = importlib.import_module(f"bench.{name}")
        started = time.perf_counter()
        print(f"== bench {name} ==", flush=True)
        module.main(args)
        print(f"== bench {name}: {time.perf_counter() - started:.1f} s ==\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
