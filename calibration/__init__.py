"""INT8 / FP16 calibration and accuracy checks (see the calibration issue)."""
