"""Benchmarks that prove the speed: lighthousefs against tmpfs and bindfs, on real mounts.

Run ``python -m benchmarks --help``; print the README table with ``python -m benchmarks.report``.
Modules: ``mounts`` (targets and cleanup), ``ops`` (per-operation latency),
``extras`` (throughput, propagation, memory, start-up), ``run`` (the CLI),
``plot`` and ``report`` (outputs from the JSON).
"""
