"""Scheduling policies (SJF and baselines) and the discrete-event cluster simulator."""
