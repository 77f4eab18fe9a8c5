"""Microbenchmarks that feed `zsim calibrate` (GEMM, attention, memory-bound, host copies, Adam, NCCL)."""
