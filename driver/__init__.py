"""pynet: a Docker network and IPAM plugin on Linux bridges, driven through pyroute2."""

__version__ = "0.1.0"
