"""The bridge mode: one Linux bridge per network, a veth pair per endpoint,
gateway addresses, NAT and isolation rules (the default `pynet.mode`)."""

from .driver import NetworkDriver

__all__ = ["NetworkDriver"]
