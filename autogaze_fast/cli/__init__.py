"""The ``autogaze-fast`` command line: ``main`` parses and dispatches; one module per command."""

from autogaze_fast.cli.main import main

__all__ = ["main"]
