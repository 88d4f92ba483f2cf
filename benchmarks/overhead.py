#!/usr/bin/python3
"""Per-call cost of routing one request through the Python binding (the request of
bench_bindings.cc). Prints ns per call; `make bench` subtracts the C++ figure."""
import sys
import timeit

import cellroute

router = cellroute.Router()
headers = {"Cookie": "preferred_language=en; _gitlab_session=cell-2-0a1b2c3d4e5f"}
assert router.route(path="/dashboard/projects", headers=headers).cell_id == 2
n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
best = min(timeit.repeat(lambda: router.route(path="/dashboard/projects", headers=headers),
                         number=n, repeat=5))
print(f"python route: {best / n * 1e9:.0f} ns per call")
