"""`python -m pipeline STAGE ...`"""
from pipeline.cli import main

raise SystemExit(main())
