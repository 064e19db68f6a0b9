"""Data sources: synthetic 2-D mixtures and embedded real data sets, as on-device batch functions."""
