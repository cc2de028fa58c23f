"""GET /debug/path: one endpoint's path, each running mode adding its hops."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from aiohttp import web
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import DriverError

from .model import Path, parse_destination

Describe = Callable[[], Awaitable[dict[str, list]]]


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"Err": text}, status=status)


async def endpoint_ids(describes: list[Describe]) -> list[str]:
    ids: list[str] = []
    for describe in describes:
        ids += [e["id"] for e in (await describe()).get("endpoints", [])]
    return ids


def resolve(ids: list[str], wanted: str) -> tuple[Optional[str], str]:
    """(the endpoint ID `wanted` names in full or by a unique prefix, else why not)."""
    if not wanted:
        return None, "name an endpoint: ?endpoint=ID (or an ID prefix)"
    matches = [i for i in ids if i == wanted] or [i for i in ids if i.startswith(wanted)]
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        return None, f"endpoint {wanted!r} is ambiguous: {', '.join(m[:12] for m in matches)}"
    return None, f"endpoint {wanted!r} is unknown to pynet (no endpoint of its networks has that ID)"


async def path_of(request: web.Request, adders: list[Callable[[Path], Awaitable[None]]],
                  describes: list[Describe]) -> web.Response:
    query = request.query
    endpoint_id, why = resolve(await endpoint_ids(describes), query.get("endpoint", ""))
    if endpoint_id is None:
        return _error(404 if query.get("endpoint") else 400, why)
    to = None
    if query.get("to"):
        try:
            to = parse_destination(query["to"], query.get("proto", "tcp"))
        except ValueError as exc:
            return _error(400, str(exc))
    path = Path(endpoint_id, to)
    try:
        for add in adders:
            await add(path)
        await path.finish()
    except (DriverError, NetlinkError, OSError) as exc:
        # The kernel or the firewall would not be read: say which endpoint, and why.
        return _error(500, f"endpoint {endpoint_id[:12]}: its path could not be read"
                           f" ({path.mode or 'no'} mode, {len(path.hops)} hops read): {exc}")
    if not path.hops:  # deleted between the lookup and now
        return _error(404, f"endpoint {endpoint_id[:12]} is gone")
    body: dict[str, Any] = path.to_json()
    return web.json_response(body)
