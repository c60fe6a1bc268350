"""Release sign-off beyond fixed tiers: against the previous run (`regression`) and tolerances
calibrated from accepted engines (`calibration`)."""
