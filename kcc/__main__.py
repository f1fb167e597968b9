"""`python -m kcc` runs the same command line as `kcc-mail`."""

from kcc.cli import main

main()
