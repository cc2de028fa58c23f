"""The overlay mode: one network across hosts, a bridge on each joined by
VXLAN, with what the hosts must agree on kept in etcd."""

from ..registry import register
from .spec import SPEC

register(SPEC)
