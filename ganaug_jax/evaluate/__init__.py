"""Evaluation: mode coverage on 2-D mixtures (more metrics arrive with the data issue)."""
