"""``python -m`` this package: the command-line interface.

A mistake in what the user gave prints one line, ``error: ...``, and exits with
status 2, whatever stage of the run finds it (``errors.at_the_door``).
"""

from .cli import main
from .errors import at_the_door

if __name__ == "__main__":
    with at_the_door():
        main()
