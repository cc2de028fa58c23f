"""Kernel work: netlink (links.py) and firewall (iptables.py). No policy here."""
