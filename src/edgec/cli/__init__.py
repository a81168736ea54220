"""The ``edgec`` command line (:mod:`edgec.cli.app`): one module per command over one flow each."""
