"""pynet's settings are checked before anything reaches the kernel (they come from
`docker plugin set` too)."""

from __future__ import annotations

import argparse

import pytest

from driver.config import add_serve_arguments, config_from_args


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


@pytest.mark.parametrize("argv", [
    ("--stale-after", "nan"), ("--stale-after", "inf"), ("--reconcile-interval", "-1"),
    ("--sysctl-root", "proc/sys"), ("--sysctl-root", "/proc/../etc"), ("--netns-mount", "run/x"),
    ("--iptables", "iptables; rm -rf /"), ("--log-level", "LOUD"),
])
def test_bad_settings_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert "error: argument" in capsys.readouterr().err


def test_the_plugins_settings():
    c = parse("--sysctl-root", "/host/proc/sys/", "--netns-mount", "/run/pynet/exec-root/netns",
              "--iptables", "nft", "--stale-after", "3")
    assert (c.sysctl_root, c.netns_mount, c.iptables, c.stale_after) == \
        ("/host/proc/sys", "/run/pynet/exec-root/netns", "nft", 3.0)
    assert parse().netns_mount == "" and parse().sysctl_root == "/proc/sys"
