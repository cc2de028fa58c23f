"""pynet's benchmark harness: `python -m bench [--quick] [--out DIR]` (root, repo root).

It starts a private Docker host of its own (tests/support/harness.py's DockerHost,
named "bench", plugin `pynet-e2e`) and measures pynet against Docker's
built-in bridge driver on the same engine in the same run, interleaved run by
run; the in-process IPAM figures need no engine. Results: DIR/benchmarks.md
and DIR/benchmarks.png. No figure is a pass/fail gate.
"""
