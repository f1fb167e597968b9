"""`python -m kcc` runs the same command line as `kcc-mail`."""

from kcc.cli import main

if __name__ == "__main__":  # a spawned helper process imports this module again; it must not run the command
    main()
