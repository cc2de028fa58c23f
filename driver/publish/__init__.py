"""Published ports (`-p`), for every network mode: which host ports, holding
them, and their DNAT rules."""
