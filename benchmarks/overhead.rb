# frozen_string_literal: true

# Per-call cost of routing one request through the Ruby extension (the request of
# bench_bindings.cc). Prints ns per call; `make bench` subtracts the C++ figure. The request's
# strings exist before the call, as a Rails request's do (and as overhead.py's do): the loop
# times the call, not making its arguments.
require "cellroute"

router = Cellroute::Router.new
headers = { "Cookie" => "preferred_language=en; _gitlab_session=cell-2-0a1b2c3d4e5f" }
raise "wrong cell" unless router.route(path: "/dashboard/projects", headers: headers).cell_id == 2

n = (ARGV[0] || 200_000).to_i
best = 5.times.map do
  t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  n.times { router.route(path: "/dashboard/projects", headers: headers) }
  Process.clock_gettime(Process::CLOCK_MONOTONIC) - t
end.min
puts format("ruby route: %.0f ns per call", best / n * 1e9)
