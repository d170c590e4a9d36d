"""Benchmarks of livexai against lime, shap, Captum and pytorch-grad-cam (run as ``python -m benchmarks.X``)."""
