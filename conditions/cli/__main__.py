"""``python -m conditions.cli`` is the ``conditionsdb`` command."""

from . import main

if __name__ == "__main__":
    main(prog_name="conditionsdb")
