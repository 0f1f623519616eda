"""``python -m decisionloop`` is the ``decisionloop`` command."""

from decisionloop.cli.main import main

main()
