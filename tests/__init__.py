"""lighthousefs's tests, in tiers (t1_domain .. t5_deploy), and tests.harness, the
helpers they share with benchmarks/. A package, so `tests.harness` is importable
from the checkout's root and no installed `tests` package can shadow it."""
