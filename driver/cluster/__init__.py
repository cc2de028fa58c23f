"""What the hosts of a cluster agree on, in etcd: membership with fencing
(membership.py), the cluster networks' pools (ipam_store.py, blocks.py),
lost hosts reclaimed (reclaim.py), the settings (settings.py) and what this
host keeps of it (store.py). No data plane: the overlay mode's VXLAN is in
driver/overlay/ (as libnetwork keeps cluster allocation apart from it).
A part the cluster modes build on, registered like a mode."""

from ..registry import register
from .spec import SPEC

register(SPEC)
