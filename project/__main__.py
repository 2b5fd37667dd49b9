"""``python -m project``: the command-line interface."""

from project.cli import main

if __name__ == "__main__":
    main()
