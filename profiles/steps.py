"""The step-count grids: the quick and full profiling sweeps, and the steps the
reference profiles are expanded over."""

QUICK_STEPS = (1, 2, 4, 8, 16, 25)
FULL_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)
