"""``autogaze-fast evaluate``: gaze selectors side by side at equal token budgets (see
:mod:`autogaze_fast.evaluate.run`)."""

from autogaze_fast.evaluate.reconstruction import Reconstruction
from autogaze_fast.evaluate.report import markdown_table, summary, write_reports
from autogaze_fast.evaluate.run import Evaluator, Video

__all__ = ["Evaluator", "Reconstruction", "Video", "markdown_table", "summary", "write_reports"]
