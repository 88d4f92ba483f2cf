"""cellroute: decide which cell serves an HTTP request.

    import cellroute
    router = cellroute.Router()                       # the embedded defaults
    d = router.route(method="GET", path="/gitlab-org/gitlab",
                     headers={"Cookie": "_gitlab_session=cell-2-5cf8"})
    d.cell_id, d.address, d.rule                       # 2, 'cell-2...:443', 'top_level_namespace'

    router = cellroute.Router.from_files(rules="rules.json", topology="config.toml")
    router = cellroute.Router(topology_service="topology.internal:9095")

A Router is safe to share between threads. route() never waits; route(..., wait=0.05) waits up
to 50 ms for the Topology Service when a claim must be asked about, with the GIL released, as
does route_batch() while it routes.
"""
from __future__ import annotations

import atexit as _atexit
import json as _json
import os as _os
import weakref as _weakref
from typing import Callable, Iterable, Mapping, Optional, Sequence, Tuple, Union

from . import _cellroute
from ._cellroute import Decision

__version__ = _cellroute.__version__
__all__ = ["Router", "Decision", "tokens", "CellrouteError", "InvalidError", "NotFoundError",
           "UnavailableError", "DeadlineExceededError", "InternalError"]


class CellrouteError(Exception):
    """Base class of cellroute's errors. `code` is the stable code of the C API. Each subclass
    is also the standard exception it means, so `except ValueError` catches a bad ruleset."""
    code = -6

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidError(CellrouteError, ValueError):
    """Bad input: a ruleset, topology, claims file, token or argument. Its message names the
    place (file:line:column, rule id, field); a reload lists every error, one per line."""
    code = -1


class NotFoundError(CellrouteError, LookupError):
    """What was asked for does not exist."""
    code = -2


class UnavailableError(CellrouteError, OSError):
    """A file cannot be read (missing, unreadable) or the Topology Service cannot be reached."""
    code = -3


class DeadlineExceededError(CellrouteError, TimeoutError):
    """A deadline passed (an instance of the builtin TimeoutError)."""
    code = -4


class InternalError(CellrouteError, RuntimeError):
    """A bug in cellroute; please report it with the message."""
    code = -6


# The C++ status codes (cellroute::StatusCode) to classes: one function maps every error.
_BY_STATUS = {1: InvalidError, 2: NotFoundError, 3: UnavailableError, 4: DeadlineExceededError,
              5: InternalError}


def _error(status: int, message: str) -> CellrouteError:
    return _BY_STATUS.get(status, InternalError)(message)


_cellroute._set_error_mapper(_error)

Pairs = Union[Mapping[str, str], Iterable[Tuple[str, str]], None]


def _split(path: str, query: str) -> Tuple[str, str]:
    if not query and "?" in path:
        path, _, query = path.partition("?")
    return path, query


# Every live Router, so that a forked child restarts their Topology Service clients before
# its first request (the parent's client threads do not survive fork()).
_routers: "_weakref.WeakSet[Router]" = _weakref.WeakSet()


def _after_fork_in_child() -> None:
    for router in list(_routers):
        router.after_fork()


_os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_events_at_exit() -> None:
    # Deliver what the event logs hold while Python can still run the callbacks.
    for router in list(_routers):
        router._native.close_events()


_atexit.register(_close_events_at_exit)


def _config(*, rules=None, topology=None, claims=None, rules_path=None,
            topology_path=None, claims_path=None, topology_service=None, tls_ca=None,
            tls_cert=None, tls_key=None, tls_server_name=None, snapshot_path=None,
            metadata=None) -> dict:
    """The constructor's and reload()'s keywords as the native shim takes them."""
    return {
        "rules_text": rules, "topology_text": topology, "claims_text": claims,
        "rules_path": rules_path, "topology_path": topology_path,
        "claims_path": claims_path, "topology_service": topology_service,
        "tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key,
        "tls_server_name": tls_server_name, "snapshot_path": snapshot_path,
        "metadata": dict(metadata) if metadata else None,
    }


class Router:
    """Rules plus topology: one routing decision per request."""

    def __init__(self, *, rules: Optional[str] = None, topology: Optional[str] = None,
                 claims: Optional[str] = None, rules_path: Optional[str] = None,
                 topology_path: Optional[str] = None, claims_path: Optional[str] = None,
                 topology_service: Optional[str] = None, tls_ca: Optional[str] = None,
                 tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 tls_server_name: Optional[str] = None, snapshot_path: Optional[str] = None,
                 metadata: Optional[Mapping[str, str]] = None,
                 on_event: Optional[Callable[[dict], None]] = None):
        """rules/topology/claims are the texts (JSON, TOML, JSON); *_path are files. Unset:
        the embedded defaults. With topology_service, cells and claims come from it.

        on_event(event: dict) receives the sync's and reloads' events (sync_failed,
        topology_changed, reload_failed, ...; docs/operations.md) on a thread of cellroute's,
        one at a time, never on a routing thread. Its exceptions go to sys.unraisablehook."""
        keywords = dict(locals())  # the keywords above, as reload() takes them
        del keywords["self"], keywords["on_event"]
        config = _config(**keywords)
        config["on_event"] = on_event
        self._native = _cellroute.NativeRouter(config)
        _routers.add(self)

    def reload(self, **options) -> None:
        """Load the same keywords as the constructor and swap them in at once: requests in
        flight finish with the old rules, every later one uses the new. On any error this
        raises with every error (file:line:column) and changes nothing. With a Topology
        Service only the rules change; its client keeps running. on_event gets
        reload_succeeded or reload_failed; the callback itself is the one given at
        construction."""
        self._native.reload(_config(**options))

    def metrics(self) -> str:
        """Every metric in the Prometheus text exposition format (decisions by rule, source
        and fallback, rejections, latency, route table, topology, service calls, reloads)."""
        return self._native.metrics()

    def after_fork(self) -> None:
        """Restart the Topology Service client in a forked child. Called for every Router by
        an os.register_at_fork hook; does nothing in the process that built the router."""
        self._native.after_fork()

    @classmethod
    def from_files(cls, *, rules: Optional[str] = None, topology: Optional[str] = None,
                   claims: Optional[str] = None, **kwargs) -> "Router":
        """A router from files: rules (JSON), topology (config.toml), claims (JSON); any left
        out is the embedded default. Other keywords as the constructor's."""
        return cls(rules_path=rules, topology_path=topology, claims_path=claims, **kwargs)

    @classmethod
    def from_strings(cls, *, rules: Optional[str] = None, topology: Optional[str] = None,
                     claims: Optional[str] = None, **kwargs) -> "Router":
        """A router from texts (the contents of the files from_files takes)."""
        return cls(rules=rules, topology=topology, claims=claims, **kwargs)

    def route(self, *, method: str = "GET", path: str = "/", host: str = "", query: str = "",
              headers: Pairs = None, cookies: Pairs = None,
              wait: Optional[float] = None) -> Decision:
        """Decide for one request. `path` may carry "?query". `wait`: seconds to wait for the
        Topology Service (GIL released); None never waits. The Decision returned may be the
        object an earlier call returned, once nothing refers to that one any more."""
        path, query = _split(path, query)
        if wait is None:
            return self._native.route(method, host, path, query, headers, cookies)
        return self._native.route_wait(method, host, path, query, headers, cookies, wait)

    def route_batch(self, requests: Sequence[Mapping]) -> list:
        """Decide for many requests (mappings of route()'s keywords but `wait`). The requests
        are copied, then routed with the GIL released once for the whole batch."""
        if not isinstance(requests, list):
            requests = list(requests)
        return self._native.route_batch(requests)

    def explain(self, *, method: str = "GET", path: str = "/", host: str = "", query: str = "",
                headers: Pairs = None, cookies: Pairs = None) -> dict:
        """Every rule tried and why, and the decision, as a dict."""
        path, query = _split(path, query)
        return _json.loads(self._native.explain(method, host, path, query, headers, cookies))

    def status(self) -> dict:
        """The Topology Service client's state and counters ({"state": "static"} without)."""
        return _json.loads(self._native.status())


from . import tokens  # noqa: E402  (after the errors it raises)
