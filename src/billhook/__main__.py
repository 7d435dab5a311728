"""`python -m billhook` runs the billhook CLI (what tests use to start real processes)."""

from billhook.cli import main

main()
