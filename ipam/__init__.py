"""pynet's IPAM driver: pools and addresses, persisted, with no kernel access."""
