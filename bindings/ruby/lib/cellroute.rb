# frozen_string_literal: true

# cellroute for Ruby: decide which cell serves a request.
#
#   router = Cellroute::Router.new                      # embedded defaults
#   d = router.route(path: "/gitlab-org/gitlab", headers: { "Cookie" => "_gitlab_session=cell-2-ab" })
#   d.cell_id  # => 2
#
# Puma: requiring this file starts nothing, and a router with a Topology Service starts its
# sync (threads, a gRPC channel) on its first request, in the process that makes it. So build
# routers in config/initializers as usual: the preloading parent starts nothing, and each worker
# starts its own sync. A router that has already routed through the service in the parent is
# taken over in a forked child on first use (or by router.after_fork! from on_worker_boot): it
# never hangs or crashes there, but gRPC cannot be used in a child forked after the parent
# started it, so that worker routes from the parent's table as it was at the fork and decides
# claims it lacks as unavailable (status "frozen"; docs/reliability.md). So do not route
# through the service before Puma forks. Routers are safe to share between threads; only calls
# that may wait on the network (route with wait:) release the GVL.
require "json"

require "cellroute/cellroute"

module Cellroute
  # The library's version (include/cellroute/version.h, the one place it is written).
  VERSION = NATIVE_VERSION

  # Cellroute.fork_generation counts the forks this process descends from (the extension
  # counts every fork()), so a router notices it is in a child without a getpid() system call
  # per request.

  # Error classes, one per code of the C API, are defined by the native extension:
  # Error, InvalidError, NotFoundError, UnavailableError, TimeoutError, InternalError.

  class Decision
    def inspect
      parts = ["rule=#{rule.empty? ? '-' : rule}", result.to_s]
      parts << "#{type}=#{value}" unless type.empty?
      parts << "cell=#{cell_id || '-'}" << address << "source=#{source}"
      parts << "fallback=#{fallback}" if fallback
      "#<Cellroute::Decision #{parts.join(' ')}>"
    end

    # "matched gitlab-org -> cell 2 (cell-2.example.com:443)": one line for logs.
    def to_s
      target = cell_id ? "cell #{cell_id} (#{address})" : (address.empty? ? "no cell" : address)
      line = "#{result} #{rule.empty? ? '-' : rule} -> #{target}"
      line += " [#{fallback}]" if fallback
      line += ": #{reason}" if rejected?
      line
    end

    def rejected?
      result == :rejected
    end

    def to_h
      JSON.parse(to_json)
    end
  end

  class Router
    OPTION_KEYS = %i[rules topology claims rules_path topology_path claims_path
                     topology_service tls_ca tls_cert tls_key tls_server_name
                     snapshot_path metadata].freeze

    # Router.from_files(rules: "rules.json", topology: "config.toml", claims: "claims.json"):
    # files; any left out is the embedded default. Other options as Router.new's.
    def self.from_files(rules: nil, topology: nil, claims: nil, **options, &block)
      new(rules_path: rules, topology_path: topology, claims_path: claims, **options, &block)
    end

    # rules:/topology:/claims: are texts; *_path: are files; unset: the embedded defaults.
    #
    # on_event: (or a block) receives the sync's and reloads' events as Hashes
    # ({"event" => "sync_failed", "code" => "UNAVAILABLE", ...}; docs/operations.md), one at a
    # time, on a Ruby thread of its own, never on a routing thread. An exception it raises is
    # printed with warn and the next event still comes. (A handler whose closure holds the
    # router keeps it, and its thread, alive as long as the handler is.)
    def initialize(on_event: nil, **options, &block)
      unknown = options.keys - OPTION_KEYS
      raise ArgumentError, "unknown options: #{unknown.join(', ')}" unless unknown.empty?
      raise ArgumentError, "give on_event: or a block, not both" if on_event && block

      @on_event = on_event || block
      if @on_event && !@on_event.respond_to?(:call)
        raise ArgumentError, "on_event: must respond to call"
      end

      @events = @on_event ? EventQueue.new : nil
      @event_thread = nil
      @options = options.freeze
      @native = nil
      @generation = nil
      @lock = Mutex.new
      if options[:topology_service]
        # Validate the rules and topology now, without starting the sync: a process that only
        # builds routers (Puma's preloading parent) never starts gRPC, so its forked workers
        # start theirs cleanly on first use.
        NativeRouter.new(options.except(:topology_service, :tls_ca, :tls_cert, :tls_key,
                                        :tls_server_name, :snapshot_path, :metadata), nil)
      else
        native # validate now: a broken ruleset raises here, not on the first request
      end
    end

    def route(method: "GET", path: "/", host: "", query: nil, headers: nil, cookies: nil, wait: nil)
      unless wait
        begin
          # The native side splits "path?query" when query is nil, as split does. It answers
          # nil until the router exists in this process (first use, or first in a forked child).
          d = @native&.route(method, host, path, query, headers, cookies)
          return d || native.route(method, host, path, query, headers, cookies)
        rescue TypeError
          # Symbols or numbers among the headers: convert, then route (split raises for a
          # path or query that is not a String).
          path, query = split(path, query)
          return native.route(method, host, path, query, pairs(headers), pairs(cookies))
        end
      end
      unless wait.is_a?(Numeric) && wait.to_f.finite? && wait >= 0
        raise ArgumentError, "wait: must be a finite number of seconds >= 0"
      end
      wait = [wait.to_f, 86_400.0].min # a wait is bounded by the fetch's own deadline too
      path, query = split(path, query)
      native.route_wait(method, host, path, query, pairs(headers), pairs(cookies), (wait * 1000).round)
    end

    def explain(method: "GET", path: "/", host: "", query: nil, headers: nil, cookies: nil)
      path, query = split(path, query)
      JSON.parse(native.explain(method, host, path, query, pairs(headers), pairs(cookies)))
    end

    def status
      JSON.parse(native.status)
    end

    # Every metric in the Prometheus text exposition format.
    def metrics
      native.metrics
    end

    # Loads the same options as Router.new and swaps them in at once: requests in flight
    # finish with the old rules, every later one uses the new. On any error this raises with
    # every error (file:line:column) and changes nothing. With a Topology Service only the
    # rules change; its client keeps running. on_event gets reload_succeeded or reload_failed
    # (the handler stays the one given to Router.new).
    def reload(**options)
      unknown = options.keys - OPTION_KEYS
      raise ArgumentError, "unknown options: #{unknown.join(', ')}" unless unknown.empty?

      native if @native # in a forked child, take the router over first (its events included)
      @lock.synchronize do
        if @native
          @native.reload(options)
        else
          # Not built yet (a Topology Service router before its first use): check the new
          # options as Router.new does; the router is built from them on first use.
          NativeRouter.new(options.except(:topology_service, :tls_ca, :tls_cert, :tls_key,
                                          :tls_server_name, :snapshot_path, :metadata), nil)
        end
        @options = options.freeze
      end
      self
    end

    # For Puma's on_worker_boot: restart what a forked child cannot inherit, now.
    def after_fork!
      @lock.synchronize do
        take_over_after_fork if @native && @generation != Cellroute.fork_generation
        @generation = Cellroute.fork_generation
        start_events if @native
      end
      self
    end

    private

    def native
      return @native if @generation == Cellroute.fork_generation

      @lock.synchronize do
        if @native.nil?
          @native = NativeRouter.new(@options, @events)
        elsif @generation != Cellroute.fork_generation
          take_over_after_fork
        end
        @generation = Cellroute.fork_generation
        start_events
      end
      @native
    end

    # In a forked child (under @lock): the sync restarts here, and the events queue is taken
    # over (its thread did not come along; start_events makes a new one).
    def take_over_after_fork
      @events&.after_fork
      @native.after_fork
    end

    # The thread that hands events to the handler.
    def start_events
      return unless @events
      return if @event_thread&.alive?

      @event_thread = Router.__send__(:events_thread, @events, @on_event)
    end

    # A class method, so that the thread's block holds the queue and the handler but not the
    # router (a block holds its self): a router nobody uses is collected, which closes the
    # queue and ends the thread. An Integer from the queue is a count of events it dropped.
    def self.events_thread(events, handler)
      Thread.new do
        Thread.current.name = "cellroute-events"
        Thread.current.report_on_exception = false
        while (item = events.pop)
          begin
            handler.call(item.is_a?(Integer) ? dropped_event(item) : JSON.parse(item))
          rescue StandardError => e
            warn "cellroute: on_event raised #{e.class}: #{e.message}"
          end
        end
      end
    end
    private_class_method :events_thread

    # The events_dropped event, as the library writes its own.
    def self.dropped_event(count)
      { "time" => Time.now.utc.strftime("%Y-%m-%dT%H:%M:%S.%LZ"), "event" => "events_dropped",
        "count" => count, "message" => "#{count} event(s) dropped: the queue was full" }
    end
    private_class_method :dropped_event

    def split(path, query)
      raise TypeError, "path must be a String, not #{path.class}" unless path.is_a?(String)
      raise TypeError, "query must be a String, not #{query.class}" unless query.nil? || query.is_a?(String)
      return [path, query || ""] if query || !path.include?("?")

      p, q = path.split("?", 2)
      [p, q.to_s]
    end

    # Name/value pairs of Strings, whatever they were given as (symbols, numbers).
    def pairs(h)
      return nil if h.nil?
      raise TypeError, "headers and cookies must be a Hash or [name, value] pairs" unless h.is_a?(Hash) || h.is_a?(Array)

      h.map do |pair|
        unless h.is_a?(Hash) || (pair.is_a?(Array) && pair.size == 2)
          raise TypeError, "headers and cookies as an Array must hold [name, value] pairs"
        end
        [pair[0].to_s, pair[1].to_s]
      end
    end
  end

  module Token
    # The token's routing fields, e.g. { "o" => 1 }; raises InvalidError when not routable.
    def self.decode(token)
      JSON.parse(_decode(token))
    end

    # Mints a token as GitLab's Rails does; random: 16 bytes for reproducible output.
    def self.encode(fields, prefix: "", random: nil)
      _encode(fields.map { |k, v| [k.to_s, Integer(v)] }, prefix, random)
    end
  end
end
