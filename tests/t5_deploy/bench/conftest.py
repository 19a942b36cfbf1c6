import sys
from pathlib import Path

# benchmarks/ is not part of the installed package: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
