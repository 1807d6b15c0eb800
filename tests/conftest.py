import sys
from pathlib import Path

# The reference lives beside the tests; make it importable as `reference`.
sys.path.insert(0, str(Path(__file__).parent))
