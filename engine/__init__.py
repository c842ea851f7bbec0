"""The device engine: one long-lived loop per device instance that runs the scheduling
core's segments a denoising step at a time, batching jobs of one model in one UNet call."""
