"""What the end-to-end tests and the benchmarks share: private Docker hosts
(harness.py), the engines they run (engines.py), and the helper programs
those start inside their namespaces. Imported by tests/e2e and bench/."""
