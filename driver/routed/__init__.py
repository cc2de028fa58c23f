"""The routed mode: one network across hosts without encapsulation, a
bridge on each host and a route to each remote container through its
host's underlay address (flannel's host-gw), learned from etcd."""

from ..registry import register
from .spec import SPEC

register(SPEC)
