"""Console entry: python -m pgcarry."""
from pgcarry.cli.main import main

raise SystemExit(main())
