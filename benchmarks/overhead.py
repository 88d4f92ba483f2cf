#!/usr/bin/python3
"""Per-call cost of routing one request through the Python binding (the request of
bench_bindings.cc), per request through route_batch, and how much a background Python thread
gets done while batches route. Prints one "name: value" line each; scripts/bench-ratios sets
them against the C++ figure (RouteOne/baseline-cpp) of the same machine."""
import sys
import threading
import time
import timeit

import cellroute

router = cellroute.Router()
headers = {"Cookie": "preferred_language=en; _gitlab_session=cell-2-0a1b2c3d4e5f"}
request = {"path": "/dashboard/projects", "headers": headers}
assert router.route(**request).cell_id == 2
n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
best = min(timeit.repeat(lambda: router.route(**request), number=n, repeat=5))
print(f"python route: {best / n * 1e9:.0f} ns per call")

batch = [request] * 10000
assert all(d.cell_id == 2 for d in router.route_batch(batch))
best_batch = min(timeit.repeat(lambda: router.route_batch(batch), number=1, repeat=5))
print(f"python route_batch: {best_batch / len(batch) * 1e9:.0f} ns per request")


# A thread counting in pure Python, alone and then while this thread routes batches: with the
# GIL released for each batch it keeps most of its pace (it shares two cores with the router).
def counting_rate(busy):
    count, stop = [0], [False]

    def spin():
        while not stop[0]:
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.05)
    c0, t0 = count[0], time.perf_counter()
    if busy:
        for _ in range(20):
            router.route_batch(batch)
    else:
        time.sleep(0.5)
    rate = (count[0] - c0) / (time.perf_counter() - t0)
    stop[0] = True
    t.join()
    return rate


alone, during = counting_rate(False), counting_rate(True)
print(f"python thread during route_batch: {during / alone:.2f} of its pace alone")
