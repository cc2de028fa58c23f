"""The bridge mode: one Linux bridge per network, a veth pair per endpoint,
gateway addresses, NAT and isolation rules (the default `pynet.mode`)."""

from ..registry import register
from .mode import BridgeMode
from .spec import SPEC

register(SPEC)

__all__ = ["BridgeMode"]
