# frozen_string_literal: true

# The Ruby extension: the same decisions as the CLI, and what a Rails monolith under Puma needs
# (threads, fork, the GVL, nothing started at require).
require "minitest/autorun"
require "json"
require "objspace"
require "open3"
require "timeout"
require "cellroute"

CLI = ENV.fetch("CELLROUTE_CLI")
EXAMPLES = ENV.fetch("CELLROUTE_EXAMPLES")
SERVER = ENV.fetch("CELLROUTE_TOPOLOGY_SERVER")
PUBLISHED = "EL25d_AKXDUtqLnIQHEpkG86MQM.01.0r1ajj2i3"

class CellrouteTest < Minitest::Test
  def router
    @router ||= Cellroute::Router.new
  end

  def test_examples_route_to_the_same_cells_as_the_cli
    file = File.join(EXAMPLES, "requests.jsonl")
    requests = File.readlines(file).reject { |l| l.strip.empty? }.map { |l| JSON.parse(l) }
    out, status = Open3.capture2(CLI, "route", file)
    assert status.success?
    expected = out.lines.map { |l| JSON.parse(l).values_at("rule", "cell_id", "address") }
    mine = requests.map do |r|
      d = router.route(method: r.fetch("method", "GET"), host: r.fetch("host", ""),
                       path: r["path"], query: r["query"], headers: r["headers"])
      [d.rule, d.cell_id, d.address]
    end
    assert_equal 14, expected.size
    assert_equal expected, mine
  end

  def test_decision_fields
    d = router.route(path: "/gitlab-org/gitlab?x=1")
    assert_equal %w[top_level_namespace classify route gitlab-org], [d.rule, d.action, d.type, d.value]
    assert_equal [:matched, 2, "cell-2.gitlab.example.com:443", :claims_file, nil],
                 [d.result, d.cell_id, d.address, d.source, d.fallback]
    assert_equal "#<Cellroute::Decision rule=top_level_namespace matched route=gitlab-org cell=2 " \
                 "cell-2.gitlab.example.com:443 source=claims_file>", d.inspect
    assert_equal "matched top_level_namespace -> cell 2 (cell-2.gitlab.example.com:443)", d.to_s
    # A CELL_ID no cell has: the legacy cell, and the fallback says why, as a Symbol.
    unknown = Cellroute::Router.new(rules: RULES % "x", topology: "[[cells]]\nid = 1\naddress = \"legacy:1\"\n")
    legacy = unknown.route(path: "/")
    assert_equal :unknown_cell, legacy.fallback
    assert_equal "matched x -> cell 1 (legacy:1) [unknown_cell]", legacy.to_s
    assert_equal({ "route" => "gitlab-org" }, d.to_h["variables"])
    assert_operator ObjectSpace.memsize_of(d), :>, 1000 # TypedData reports its size
    assert_equal 3, router.route(path: "/help", cookies: { "force-cell" => "cell-3" }).cell_id
    assert_equal 2, router.route(path: "/help", headers: [["Cookie", "_gitlab_session=cell-2-a"]]).cell_id
    assert_equal 3, router.route(path: "/help", headers: { Cookie: "_gitlab_session=cell-3-a" }).cell_id
    assert_raises(TypeError) { router.route(path: "/help", headers: "Cookie: x") }
    # The query is what follows the path's first "?", unless query: is given.
    assert_equal "gitlab-org", router.route(path: "/gitlab-org?x=1").value
    assert_equal "acme", router.route(path: "/acme?/x", headers: { Accept: "*/*" }).value
    refute_equal "gitlab-org", router.route(path: "/gitlab-org?x=1", query: "").value
  end

  def test_rejected_token
    token = Cellroute::Token.encode({ c: 2 }, prefix: "glpat-", random: "\0" * 16)
    d = router.route(path: "/api/v4/user", headers: { "Private-Token" => token[0...-9] + "zz" + token[-7..] })
    assert d.rejected?
    assert_nil d.cell_id
    assert_match(/routable token/, d.reason)
  end

  def test_one_exception_class_per_code
    e = assert_raises(Cellroute::InvalidError) { Cellroute::Router.new(rules: '[{"id":"r1","action":"x"}]') }
    assert_match(/rule 'r1' \(#1\): action/, e.message)
    assert_raises(Cellroute::UnavailableError) { Cellroute::Router.new(rules_path: "/nonexistent.json") }
    assert_raises(Cellroute::InvalidError) { Cellroute::Token.decode("glpat-nope") }
    assert_raises(ArgumentError) { Cellroute::Router.new(colour: 1) }
    assert_operator Cellroute::UnavailableError, :<, Cellroute::Error
  end

  def test_tokens_match_the_cli
    assert_equal({ "o" => 1 }, Cellroute::Token.decode(PUBLISHED))
    random = (0..15).to_a.pack("C*")
    token = Cellroute::Token.encode({ o: 1, c: 2 }, prefix: "glrt-", random: random)
    out, = Open3.capture2(CLI, "token", "encode", "--prefix", "glrt-", "--random",
                          random.unpack1("H*"), "c=2", "o=1")
    assert_equal out.strip, token
    assert_equal({ "c" => 2, "o" => 1 }, Cellroute::Token.decode(token))
    refute_equal Cellroute::Token.encode({ c: 1 }), Cellroute::Token.encode({ c: 1 })
  end

  def test_explain_and_status
    e = router.explain(path: "/unknown-group/x")
    reasons = e["trace"].to_h { |t| [t["rule"], t["reason"]] }
    assert_match(/no cell owns route 'unknown-group'/, reasons["top_level_namespace"])
    assert_equal({ "state" => "static" }, router.status)
  end

  def test_many_ruby_threads_route_at_once
    paths = ["/gitlab-org/x", "/o/acme-corp/y", "/acme/z", "/users/sign_in"]
    want = paths.map { |p| router.route(path: p).cell_id }
    bad = Queue.new
    8.times.map do
      Thread.new { 500.times { |i| bad << i if router.route(path: paths[i % 4]).cell_id != want[i % 4] } }
    end.each(&:join)
    assert_equal [2, 3, 3, 1], want
    assert bad.empty?
  end

  def test_nothing_starts_at_require
    script = 'before = Dir["/proc/self/task/*"].size; require "cellroute"; ' \
             'after = Dir["/proc/self/task/*"].size; print before == after'
    out, status = Open3.capture2(RbConfig.ruby, *$LOAD_PATH.flat_map { |p| ["-I", p] }, "-e", script)
    assert status.success?
    assert_equal "true", out
  end

  # Runs the block in a forked child; what it returns, as a String, and the child's success.
  def in_child
    rd, wr = IO.pipe
    pid = fork do
      rd.close
      wr.write(yield.to_s)
      wr.close
      exit!(0)
    end
    wr.close
    out = rd.read
    _, status = Process.wait2(pid)
    assert status.success?
    out
  end

  def test_a_forked_child_routes
    r = Cellroute::Router.new
    assert_equal 2, r.route(path: "/gitlab-org/x").cell_id
    assert_equal "3", in_child { r.route(path: "/acme/y").cell_id }
  end

  def with_service
    out, wr = IO.pipe
    pid = spawn(SERVER, "--listen", "127.0.0.1:0", "--config", File.join(EXAMPLES, "topology.toml"),
                "--claims", File.join(EXAMPLES, "claims.json"), out: wr)
    wr.close
    line = out.gets.to_s
    assert_match(/^listening on /, line)
    yield line.split.last
  ensure
    Process.kill("TERM", pid) if pid
    Process.wait(pid) if pid
  end

  # In a process of its own, as Puma's preloading parent: build the router (which starts no
  # thread and no channel), route nothing, fork a worker that routes through the service.
  PUMA_LIKE = <<~'RUBY'
    require "cellroute"
    tasks = -> { Dir["/proc/self/task/*"].size }
    before = tasks.call
    r = Cellroute::Router.new(topology_service: ARGV[0])
    started = tasks.call - before
    rd, wr = IO.pipe
    pid = fork do
      rd.close
      d = r.route(path: "/acme/y", wait: 2)
      wr.write([d.cell_id, d.source, r.status["state"]].join(" "))
      wr.close
      exit!(0)
    end
    wr.close
    child = rd.read
    _, status = Process.wait2(pid)
    parent = r.route(path: "/gitlab-org/x", wait: 2)
    puts [started, child, status.success?, parent.cell_id].join("|")
  RUBY

  # Runs a script in a Ruby process of its own (this test's load path, the dev service's
  # address as its argument) and checks what it prints.
  def assert_script_prints(expected, script, *args)
    with_service do |address|
      out, err, status = Open3.capture3(RbConfig.ruby, *$LOAD_PATH.flat_map { |p| ["-I", p] },
                                        "-e", script, address, *args)
      assert status.success?, err
      assert_equal expected, out.strip
    end
  end

  def test_a_puma_worker_starts_its_own_sync
    assert_script_prints("0|3 route_table syncing|true|2", PUMA_LIKE)
  end

  def test_waiting_on_the_service_releases_the_gvl
    r = Cellroute::Router.new(topology_service: "127.0.0.1:1",
                              topology: File.read(File.join(EXAMPLES, "topology.toml")))
    ticks = 0
    spinner = Thread.new { loop { ticks += 1 } }
    sleep 0.05
    before = ticks
    d = r.route(path: "/gitlab-org/x", wait: 0.4)
    during = ticks - before
    spinner.kill
    assert_equal 1, d.cell_id
    assert_operator during, :>, 1000 # Ruby ran while the call waited
  end

  # --- Safe to embed ---------------------------------------------------------------------------

  def test_a_decision_outlives_its_router_and_gc
    d = Cellroute::Router.new.route(path: "/gitlab-org/gitlab")
    GC.start
    junk = Array.new(20_000) { |i| "Z" * (i % 97) } # reuse what the GC freed
    assert_equal "top_level_namespace", d.rule
    assert_equal "gitlab-org", d.value
    assert_equal "top_level_namespace", JSON.parse(d.to_json)["rule"]
    assert junk.size.positive?
  end

  def test_decisions_made_from_collected_ones_equal_the_cli_in_every_field
    # The extension routes into the memory of decisions the GC collected: each route here
    # follows a collection of the one before, in two orders, and must carry nothing over
    # (variables, reason, fallback, address) from it.
    file = File.join(EXAMPLES, "requests.jsonl")
    requests = File.readlines(file).reject { |l| l.strip.empty? }.map { |l| JSON.parse(l) }
    out, status = Open3.capture2(CLI, "route", file)
    assert status.success?
    expected = out.lines.map { |l| JSON.parse(l).tap { |h| h.delete("line") } }
    assert_equal requests.size, expected.size
    order = (0...requests.size).to_a
    [order, order.reverse, order.each_slice(2).flat_map(&:reverse)].each do |sequence|
      sequence.each do |i|
        r = requests[i]
        GC.start
        d = router.route(method: r.fetch("method", "GET"), host: r.fetch("host", ""),
                         path: r["path"], query: r["query"], headers: r["headers"])
        assert_equal expected[i], JSON.parse(d.to_json), "request #{i + 1}"
      end
    end
  end

  def test_long_header_and_cookie_lists_route_as_short_ones
    # Up to 16 headers (and 16 cookies) are listed on the stack, more in a temporary buffer.
    headers = (1..40).to_h { |i| ["X-Extra-#{i}", "v#{i}"] }.merge("Cookie" => "_gitlab_session=cell-3-ab")
    cookies = (1..30).map { |i| ["extra_#{i}", "v"] }
    GC.stress = true
    begin
      routed = [router.route(path: "/dashboard", headers: headers, cookies: cookies),
                router.route(path: "/dashboard", headers: headers.to_a, cookies: cookies.to_h),
                router.route(path: "/dashboard", headers: headers.to_a.reverse, wait: 1)]
    ensure
      GC.stress = false
    end
    assert_equal [3, 3, 3], routed.map(&:cell_id)
    assert_equal 3, router.route(path: "/dashboard", cookies: cookies + [["force-cell", "cell-3"]]).cell_id
  end

  def test_headers_named_by_symbols_route_and_leave_nothing_behind
    # Symbol names make the extension refuse the call (TypeError) and the Ruby side convert
    # them and call again: nothing the refused call made may be lost. 100,000 lost decisions
    # would be over 250 MB.
    rss = -> { File.read("/proc/self/status")[/VmRSS:\s+(\d+)/, 1].to_i * 1024 }
    headers = { Cookie: "_gitlab_session=cell-2-0a1b2c3d" }
    assert_equal 2, router.route(path: "/dashboard", headers: headers).cell_id
    2_000.times { router.route(path: "/dashboard", headers: headers) }
    GC.start
    before = rss.call
    100_000.times { router.route(path: "/dashboard", headers: headers) }
    GC.start
    assert_operator rss.call - before, :<, 100 << 20
  end

  def test_refused_options_and_token_fields_leave_nothing_behind
    # A conversion that raises half-way (a value past 64 bits, a metadata string with a NUL
    # byte, found when the router is first used) must not lose what the extension had made:
    # before, 5,000 such encodes lost 153 MB and 100,000 such routes 62 MB.
    rss = -> { File.read("/proc/self/status")[/VmRSS:\s+(\d+)/, 1].to_i * 1024 }
    fields = Array.new(2000) { ["c", 1] } + [["o", 2**70]]
    assert_raises(RangeError) { Cellroute::Token.encode(fields) }
    GC.start
    before = rss.call
    5_000.times { assert_raises(RangeError) { Cellroute::Token.encode(fields) } }
    GC.start
    assert_operator rss.call - before, :<, 32 << 20

    r = Cellroute::Router.new(topology_service: "127.0.0.1:1", metadata: { "k" => "v\0" })
    assert_raises(ArgumentError) { r.route(path: "/") }
    GC.start
    before = rss.call
    100_000.times do
      r.route(path: "/")
    rescue ArgumentError
      nil
    end
    GC.start
    assert_operator rss.call - before, :<, 24 << 20
  end

  def test_options_convert_with_to_str_and_file_names_refuse_nul_bytes
    text = Class.new do
      def initialize(s) = @s = s
      def to_str = @s.dup # a new String each time, referred to by nothing else
    end
    files = %w[rules.json topology.toml claims.json].map { |f| File.read(File.join(EXAMPLES, f)) }
    GC.stress = true
    begin
      r = Cellroute::Router.new(rules: text.new(files[0]), topology: text.new(files[1]),
                                claims: text.new(files[2]))
      cell = r.route(path: "/gitlab-org/gitlab").cell_id
    ensure
      GC.stress = false
    end
    assert_equal 2, cell
    # A NUL byte would cut the name short and open another file: refused instead.
    error = assert_raises(ArgumentError) do
      Cellroute::Router.new(rules_path: File.join(EXAMPLES, "rules.json") + "\0.bak")
    end
    assert_match(/null byte/, error.message)
  end

  def test_empty_text_is_an_error_not_the_defaults
    %i[rules topology claims].each do |which|
      error = assert_raises(Cellroute::InvalidError) { Cellroute::Router.new(which => "") }
      assert_match(/empty/, error.message)
    end
  end

  def test_wrong_types_raise_type_error
    r = Cellroute::Router.new
    assert_equal "path must be a String, not Integer", assert_raises(TypeError) { r.route(path: 123) }.message
    assert_equal "query must be a String, not Symbol",
                 assert_raises(TypeError) { r.route(path: "/", query: :q, headers: { a: "b" }) }.message
    assert_raises(TypeError) { r.route(path: "/", headers: [["a"]]) }
    assert_raises(TypeError) { r.route(path: "/", headers: "Cookie: a=b") }
    assert_raises(ArgumentError) { r.route(path: "/", wait: Float::NAN) }
  end

  def test_tokens_refuse_what_rails_refuses
    assert_raises(Cellroute::InvalidError) { Cellroute::Token.encode({ "\xff" => 2 }) }
    assert_raises(Cellroute::InvalidError) { Cellroute::Token.encode({ p: 2 }) }
  end

  def test_route_wait_reads_a_copy_while_the_gvl_is_released
    r = Cellroute::Router.new(topology_service: "127.0.0.1:1",
                              topology: File.read(File.join(EXAMPLES, "topology.toml")))
    path = +"/gitlab-org/x"
    headers = { "X" => +"y" }
    stop = false
    mutator = Thread.new do
      i = 0
      until stop
        headers["X"] = "z" * (i % 4096)
        path.replace("/gitlab-org/x")
        i += 1
      end
    end
    3.times { assert_equal 1, r.route(path: path, headers: headers, wait: 0.05).cell_id }
  ensure
    stop = true
    mutator&.join
  end

  # Puma's real pattern: preload, route through the service in the parent, fork 8 workers for
  # several cycles, route in each, shut them down with SIGTERM. Nothing may hang.
  PUMA_CYCLES = <<~'RUBY'
    require "cellroute"
    r = Cellroute::Router.new(topology_service: ARGV[0])
    abort "parent" unless r.route(path: "/gitlab-org/x", wait: 2).cell_id == 2
    3.times do
      pids = Array.new(8) do
        fork do
          # gRPC cannot be used in a child of a process that started it: the worker routes from
          # the parent's table as it was at the fork, and what it lacks decides as unavailable.
          known = r.route(path: "/gitlab-org/x", wait: 2)
          unknown = r.route(path: "/acme/y", wait: 2)
          exit!(3) unless known.cell_id == 2 && known.source == :route_table &&
                          unknown.cell_id == 1 && unknown.fallback == :unavailable &&
                          r.status["state"] == "frozen"
          loop { r.route(path: "/acme/y", wait: 1) }
        end
      end
      sleep 0.3
      pids.each { |pid| Process.kill("TERM", pid) }
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
      pids.each do |pid|
        status = nil
        until (status = Process.wait2(pid, Process::WNOHANG)&.last)
          if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
            Process.kill("KILL", pid)
            abort "worker #{pid} ignored SIGTERM"
          end
          sleep 0.01
        end
        abort "worker #{pid} routed wrongly" if status.exited? && status.exitstatus == 3
        abort "worker #{pid}: #{status.inspect}" unless status.signaled? && status.termsig == 15
      end
    end
    abort "parent after" unless r.route(path: "/acme/y", wait: 2).cell_id == 3 # the parent's sync lives on
    puts "ok"
  RUBY

  def test_puma_workers_forked_after_the_parent_routed_through_the_service
    assert_script_prints("ok", PUMA_CYCLES)
  end

  # A child's first call is a plain route (no wait:, no status): the extension itself must
  # notice the fork and have the router taken over, or the request waits on the parent's
  # client, which does not exist there (it answered :pending, with the status "syncing").
  # ARGV[1] says how the child comes to be: fork, or Process.daemon, which forks without
  # Process._fork.
  FIRST_CALL_IN_CHILD = <<~'RUBY'
    require "cellroute"
    r = Cellroute::Router.new(topology_service: ARGV[0])
    abort "parent" unless r.route(path: "/gitlab-org/x", wait: 2).cell_id == 2
    first_call = lambda do
      d = r.route(path: "/acme/y")
      "#{d.cell_id} #{d.fallback.inspect} #{r.status["state"]}"
    end
    if ARGV[1] == "daemon"
      Process.daemon(true, true) # keeps stdout: the test reads what the daemon prints
      puts first_call.call
    else
      rd, wr = IO.pipe
      pid = fork do
        wr.write(first_call.call)
        exit!(0)
      end
      wr.close
      puts rd.read
      Process.wait(pid)
    end
  RUBY

  def test_a_plain_route_is_the_first_call_in_a_forked_child
    assert_script_prints("1 :unavailable frozen", FIRST_CALL_IN_CHILD, "fork")
  end

  def test_a_daemonized_process_takes_the_router_over
    assert_script_prints("1 :unavailable frozen", FIRST_CALL_IN_CHILD, "daemon")
  end

  RULES = '[{"id": "%s", "action": "classify", "classify": {"type": "CELL_ID", "value": "5"}}]'
  TOPOLOGY = "[[cells]]\nid = 1\naddress = \"legacy:1\"\n[[cells]]\nid = 5\naddress = \"%s:5\"\n"

  def test_metrics_count_what_was_routed_and_reloads_swap_rules_and_cells
    r = Cellroute::Router.new(rules: RULES % "a", topology: TOPOLOGY % "a")
    3.times { r.route(path: "/") }
    assert_includes r.metrics, 'cellroute_decisions_total{rule="a",action="classify",type="CELL_ID",' \
                               'source="cell_list",fallback="none"} 3' + "\n"
    seen = Queue.new
    routers = 2.times.map do
      Thread.new { 500.times { d = r.route(path: "/"); seen << [d.rule, d.address] } }
    end
    50.times { |i| r.reload(rules: RULES % "ab"[i % 2], topology: TOPOLOGY % "ab"[i % 2]) }
    routers.each(&:join)
    pairs = Array.new(seen.size) { seen.pop }.uniq
    assert_empty pairs - [["a", "a:5"], ["b", "b:5"]] # never the rules of one with the cells of the other
    assert_equal "b:5", r.route(path: "/").address

    error = assert_raises(Cellroute::InvalidError) { r.reload(rules: "[{\"id\": \"x\",\n \"action\" 1}]") }
    assert_includes error.message, "<rules>:2:"
    assert_equal "b:5", r.route(path: "/").address # a bad reload changes nothing
    assert_raises(ArgumentError) { r.reload(rulez: "[]") }
    metrics = r.metrics
    assert_includes metrics, "cellroute_reloads_total{result=\"success\"} 50\n"
    assert_includes metrics, "cellroute_reloads_total{result=\"failure\"} 1\n"
  end

  def test_version_and_from_files
    assert_equal File.read(File.join(__dir__, "../../include/cellroute/version.h"))
                     .scan(/CR_VERSION_(?:MAJOR|MINOR|PATCH) (\d+)/).join("."), Cellroute::VERSION
    r = Cellroute::Router.from_files(rules: File.join(EXAMPLES, "rules.json"),
                                     topology: File.join(EXAMPLES, "topology.toml"),
                                     claims: File.join(EXAMPLES, "claims.json"))
    assert_equal 3, r.route(path: "/o/acme-corp/x").cell_id
    assert_raises(Cellroute::UnavailableError) { Cellroute::Router.from_files(rules: "/nonexistent.json") }
  end

  # Queue#pop(timeout:) is Ruby 3.2's.
  def pop_within(queue, seconds = 5)
    Timeout.timeout(seconds) { queue.pop }
  end

  def test_on_event_receives_reloads_as_hashes_on_a_thread_of_its_own
    got = Queue.new
    threads = Queue.new
    r = Cellroute::Router.new(rules: RULES % "a", topology: TOPOLOGY % "a") do |event|
      threads << Thread.current
      got << event
    end
    r.reload(rules: RULES % "b", topology: TOPOLOGY % "b")
    assert_raises(Cellroute::InvalidError) { r.reload(rules: "[", topology_path: "/nonexistent.toml") }
    first = pop_within(got)
    second = pop_within(got)
    assert_equal "reload_succeeded", first["event"]
    assert_equal "reload_failed", second["event"]
    assert_equal "invalid", second["code"]
    assert_equal 2, second["count"]
    assert_includes second["message"], "/nonexistent.toml"
    refute_equal Thread.current, pop_within(threads)
  end

  def test_an_on_event_that_raises_is_warned_about_and_events_keep_coming
    got = Queue.new
    handler = lambda do |event|
      got << event
      raise "handler bug"
    end
    r = Cellroute::Router.new(on_event: handler)
    _, err = capture_subprocess_io do
      2.times { r.reload }
      2.times { assert pop_within(got) }
      sleep 0.1
    end
    assert_includes err, "on_event raised RuntimeError: handler bug"
    assert_raises(ArgumentError) { Cellroute::Router.new(on_event: 42) }
  end

  def test_events_a_slow_handler_misses_are_counted_in_their_place
    gate = Queue.new
    got = []
    r = Cellroute::Router.new(rules: RULES % "a", topology: TOPOLOGY % "a") do |event|
      gate.pop if got.empty? # the handler blocks on the first event until the test opens it
      got << event
    end
    1100.times { r.reload(rules: RULES % "a", topology: TOPOLOGY % "a") }
    sleep 0.2 # the library's thread hands everything over to the extension's queue (1024)
    gate << :open
    Timeout.timeout(10) { sleep 0.01 until got.any? { |e| e["event"] == "events_dropped" } }
    sleep 0.1
    reloads = got.count { |e| e["event"] == "reload_succeeded" }
    dropped = got.select { |e| e["event"] == "events_dropped" }
    # Nothing lost silently: every reload was either delivered or counted.
    assert_equal 1100, reloads + dropped.sum { |e| e["count"] }
    assert_operator reloads, :>=, 1024
    assert_match(/\A\d{4}-\d\d-\d\dT.*Z\z/, dropped.first["time"])
    # Reported in their place: after every reload that was queued before them.
    assert_equal "events_dropped", got.last["event"]
  end

  def test_events_in_a_forked_child_come_from_a_new_thread
    got = Queue.new
    r = Cellroute::Router.new { |event| got << event["event"] }
    r.reload
    assert_equal "reload_succeeded", pop_within(got)
    assert_equal "reload_succeeded", in_child {
      r.reload
      pop_within(got)
    }
  end

  def test_a_router_with_events_is_collected_and_its_thread_ends
    script = <<~'RUBY'
      require "cellroute"
      # (A handler made where the router is a local variable would hold it through its closure.)
      def handler(got)
        ->(e) { got << e }
      end

      def make(got)
        r = Cellroute::Router.new(on_event: handler(got))
        3.times { r.reload }
        nil
      end
      got = Queue.new
      make(got)
      3.times { got.pop }
      thread = Thread.list.find { |t| t.name == "cellroute-events" }
      20.times { GC.start; break unless thread.alive?; sleep 0.05 }
      puts thread.alive? ? "alive" : "ended"
    RUBY
    out, err, status = Open3.capture3("ruby", *$LOAD_PATH.flat_map { |p| ["-I", p] }, "-e", script)
    assert status.success?, err
    assert_equal "ended", out.strip
  end
end
