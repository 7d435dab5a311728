"""`python -m worker` runs the billhook CLI (what tests use to start real processes)."""

from worker.cli import main

main()
