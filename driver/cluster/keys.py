"""Where the cluster keeps what hosts must agree on, under one etcd prefix.

    hosts/<host>                    {"vtep", "epoch", "version", "started"}, on the host's lease
    epochs/<host>                   the host's registration epoch (no lease: a paused host keeps it)
    lost/<host>                     the epoch a reclaim left it at (until the host registers again)
    networks/<name>                 a cluster network's definition, written by the first host
    vnis/<vni>                      the network name that holds this VNI
    pools/<name>/<subnet>           {"gateway"}: one subnet of it, written at RequestPool
    blocks/<name>/<block>           {"host", "epoch"}: a block of addresses a host hands out
    addresses/<name>/<ip>           {"host", "epoch"}: one address, claimed by a host
    endpoints/<name>/<endpoint>     {"host", "epoch", "vtep", "mac", "ips"}: what peers program

Nothing but hosts/ is on a lease: an address in use never expires; only a
host that stayed away past the grace period is reclaimed (and fenced first).
A subnet's "/" would split the key, so it is written with "_".
"""

from __future__ import annotations

from dataclasses import dataclass


def subnet_key(subnet: str) -> str:
    return subnet.replace("/", "_")


def subnet_of_key(part: str) -> str:
    return part.replace("_", "/")


@dataclass(frozen=True)
class Keys:
    prefix: str = "/pynet"

    def _k(self, *parts: str) -> bytes:
        return "/".join((self.prefix.rstrip("/"), *parts)).encode()

    def all(self, kind: str) -> bytes:
        """The prefix of every key of one kind: all(\"blocks\") -> b"/pynet/blocks/"."""
        return self._k(kind, "")

    def host(self, host: str) -> bytes:
        return self._k("hosts", host)

    def epoch(self, host: str) -> bytes:
        return self._k("epochs", host)

    def lost(self, host: str) -> bytes:
        return self._k("lost", host)

    def network(self, name: str) -> bytes:
        return self._k("networks", name)

    def vni(self, vni: int) -> bytes:
        return self._k("vnis", str(vni))

    def pool(self, name: str, subnet: str) -> bytes:
        return self._k("pools", name, subnet_key(subnet))

    def block(self, name: str, block: str) -> bytes:
        return self._k("blocks", name, subnet_key(block))

    def address(self, name: str, ip: str) -> bytes:
        return self._k("addresses", name, ip)

    def endpoint(self, name: str, endpoint_id: str) -> bytes:
        return self._k("endpoints", name, endpoint_id)

    def parts(self, key: bytes) -> list[str]:
        """The path below the prefix: b"/pynet/endpoints/web/ab12" -> ["endpoints", "web", "ab12"]."""
        return key.decode()[len(self.prefix.rstrip("/")) + 1:].split("/")
