"""``loyalty bench``: throughput, latency, baseline, scale-out, recovery and memory of workers.

A benchmark program, not a test: it starts its own local Kafka broker, runs the worker as
a child process exactly as in production, prints a table and writes the figures as JSON.
One module per phase; ``run.py`` puts them in order.
"""
