"""`python -m rtdecode.cli ...` runs the command line (used to start the daemon as a subprocess)."""

from rtdecode.cli import main

main()
