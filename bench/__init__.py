"""voice-mcp benchmarks: latency per stage, real-time factors, endpointing side by side, worker capacity.

Run `python -m bench --help`; what each number means is in docs/performance.md.
"""
