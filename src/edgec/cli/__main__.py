"""``python -m edgec.cli``: the ``edgec`` command."""

from edgec.cli.app import main

main()
