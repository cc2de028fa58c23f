"""Kernel work: netlink (links.py) and firewall (firewall.py). No policy here."""
