"""`autogaze-fast evaluate`: gaze selectors side by side at equal token budgets."""
