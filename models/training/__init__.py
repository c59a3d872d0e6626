"""Training the dual encoder (end to end or heads only) and scoring it."""
