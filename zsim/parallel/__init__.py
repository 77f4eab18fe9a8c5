"""Parallelism beyond data parallelism: the 3D layout, Megatron's activation memory and the
pipeline schedules (1F1B, DeepSpeed's pipeline engine).

What exists and what is not modelled yet: docs/parallelism.md. Nothing here is wired into
``zsim predict``'s timing; the CLI refuses tensor/pipeline/sequence degrees above 1.
"""
