"""The HTTP side of the plugin: routes, request parsing, and the one place
where exceptions become Docker's `{"Err": ...}` replies.

Docker's transport rules (../shared/reference/docker-plugin-api.md): every
call is a POST, often with an empty body and no Content-Type; success is 200
with a JSON body; failure is 500 with {"Err": "..."}; unknown paths are 404.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ipam import wire as ipam_wire
from ipam.contract import IpamApi
from ipam.errors import IpamError

from . import wire
from .contract import NetworkApi
from .errors import DriverError

if TYPE_CHECKING:
    from .debug import DebugApi

log = logging.getLogger("pynet.server")

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_BODY = 1024 * 1024  # Docker's largest request (a big portmap) is a few KiB


@dataclass(frozen=True)
class Route:
    request: Optional[type[BaseModel]]  # None: the body is ignored
    handler: Callable[[Any], Awaitable[BaseModel]]


def routes(driver: NetworkApi, ipam: IpamApi) -> dict[str, Route]:
    async def activate(_):
        return wire.ActivateResponse(Implements=["NetworkDriver", "IpamDriver"])

    return {
        "/Plugin.Activate": Route(None, activate),
        "/NetworkDriver.GetCapabilities": Route(None, lambda _: driver.capabilities()),
        "/NetworkDriver.CreateNetwork": Route(wire.CreateNetworkRequest, driver.create_network),
        "/NetworkDriver.DeleteNetwork": Route(wire.NetworkRequest, driver.delete_network),
        "/NetworkDriver.CreateEndpoint": Route(wire.CreateEndpointRequest, driver.create_endpoint),
        "/NetworkDriver.DeleteEndpoint": Route(wire.EndpointRequest, driver.delete_endpoint),
        "/NetworkDriver.EndpointOperInfo": Route(wire.EndpointRequest, driver.oper_info),
        "/NetworkDriver.Join": Route(wire.JoinRequest, driver.join),
        "/NetworkDriver.Leave": Route(wire.EndpointRequest, driver.leave),
        "/NetworkDriver.ProgramExternalConnectivity": Route(
            wire.ProgramExternalConnectivityRequest, driver.program_external_connectivity),
        "/NetworkDriver.RevokeExternalConnectivity": Route(
            wire.EndpointRequest, driver.revoke_external_connectivity),
        "/NetworkDriver.DiscoverNew": Route(wire.DiscoveryRequest, driver.discover_new),
        "/NetworkDriver.DiscoverDelete": Route(wire.DiscoveryRequest, driver.discover_delete),
        "/IpamDriver.GetCapabilities": Route(None, lambda _: ipam.capabilities()),
        "/IpamDriver.GetDefaultAddressSpaces": Route(None, lambda _: ipam.address_spaces()),
        "/IpamDriver.RequestPool": Route(ipam_wire.RequestPoolRequest, ipam.request_pool),
        "/IpamDriver.ReleasePool": Route(ipam_wire.ReleasePoolRequest, ipam.release_pool),
        "/IpamDriver.RequestAddress": Route(ipam_wire.RequestAddressRequest, ipam.request_address),
        "/IpamDriver.ReleaseAddress": Route(ipam_wire.ReleaseAddressRequest, ipam.release_address),
    }


class BadRequest(Exception):
    """The body could not be read as the call's request."""


async def read_body(request: web.Request) -> bytes:
    """The whole body, however it arrives; BadRequest past MAX_BODY."""
    raw = bytearray()
    while chunk := await request.content.read(MAX_BODY + 1 - len(raw)):
        raw += chunk
        if len(raw) > MAX_BODY:
            raise BadRequest(f"body larger than {MAX_BODY} bytes")
    return bytes(raw)


EMPTY_RETRY = ("empty request body: Docker sends a call again with an empty body when it"
               " retries after losing its connection to the plugin (was pynet restarting?);"
               " the operation must be run again")


def parse_body(model: type[BaseModel], raw: bytes) -> BaseModel:
    if not raw.strip():
        if any(f.is_required() for f in model.model_fields.values()):
            raise BadRequest(EMPTY_RETRY)
        raw = b"{}"  # Docker sends some calls with no body at all
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("body is nested too deeply to be a Docker request") from None
    if not isinstance(data, dict):
        raise BadRequest(f"body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe_validation(exc)) from None


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"field {where}: {err['msg']}")
    return "; ".join(parts)


def error_text(method: str, exc: BaseException) -> tuple[str, bool]:
    """The message Docker shows for a failed call, and whether it was expected.

    The one place exceptions are mapped to errors: refusals pynet decided
    (bad requests, driver and IPAM errors) carry their own text; anything else
    is a bug and says so.
    """
    if isinstance(exc, (BadRequest, DriverError, IpamError)):
        return str(exc), True
    return f"pynet internal error in {method}: {type(exc).__name__}: {exc}", False


_LOGGED_FIELDS = (("NetworkID", "network", 12), ("EndpointID", "endpoint", 12),
                  ("PoolID", "pool", None), ("Address", "address", None))


def short_ids(body: BaseModel | None) -> str:
    """The objects a call is about, for its log line."""
    parts = []
    for field, label, cut in _LOGGED_FIELDS:
        value = getattr(body, field, None)
        if value:
            parts.append(f"{label}={value[:cut]}")
    return " ".join(parts)


@web.middleware
async def one_call_per_connection(request: web.Request, handler) -> web.StreamResponse:
    """Every answer closes its connection: Docker then never reuses an idle
    connection that pynet could close under a request just written (a stop or
    restart would lose that call; see listener.py). A Unix dial is cheap."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.force_close()
        raise
    response.force_close()
    return response


def make_app(driver: NetworkApi, ipam: IpamApi, debug: Optional["DebugApi"] = None) -> web.Application:
    """The plugin's HTTP application; with `debug`, pynet's own endpoints and metrics too."""
    table = routes(driver, ipam)
    counter = itertools.count(1)
    metrics = debug.metrics if debug else None

    async def dispatch(request: web.Request) -> web.Response:
        route = table.get(request.path)
        if route is None or request.method != "POST":
            return web.json_response({"Err": f"{request.method} {request.path}: no such call"},
                                     status=404, content_type=CONTENT_TYPE)
        method = request.path.lstrip("/")
        rid = next(counter)
        started = time.perf_counter()
        body = None
        try:
            raw = await read_body(request)
            body = parse_body(route.request, raw) if route.request else None
            result = await route.handler(body)
            reply, status = result.model_dump(exclude_none=True), 200
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - this is the error boundary
            text, expected = error_text(method, exc)
            reply, status, outcome = {"Err": text}, 500, f"error: {text}"
            if not expected:
                log.exception("req=%d %s failed unexpectedly", rid, method)
        elapsed = (time.perf_counter() - started) * 1000
        if metrics is not None:
            metrics.observe_call(method, elapsed / 1000, status != 200)
        level = logging.INFO if status == 200 else logging.WARNING
        log.log(level, "req=%d %s %s %.1fms %s", rid, method, short_ids(body), elapsed, outcome)
        return web.json_response(reply, status=status, content_type=CONTENT_TYPE)

    app = web.Application(client_max_size=MAX_BODY, middlewares=[one_call_per_connection])
    if debug is not None:
        debug.add_routes(app)
    app.router.add_route("*", r"/{tail:[\s\S]*}", dispatch)  # any path, even with a newline
    return app
