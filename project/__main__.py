"""``python -m project``: the command-line interface.

A mistake in what the user gave prints one line, ``error: ...``, and exits with
status 2, whatever stage of the run finds it (``project.errors.at_the_door``).
"""

from project.cli import main
from project.errors import at_the_door

if __name__ == "__main__":
    with at_the_door():
        main()
