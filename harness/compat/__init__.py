"""Work-arounds for running the engines on machines without CUDA."""
