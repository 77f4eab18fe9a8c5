"""Parallelism beyond data parallelism: the 3D layout, Megatron's activation memory and the
pipeline schedules (1F1B, DeepSpeed's pipeline engine).

What exists and what is not modelled yet: docs/parallelism.md. None of the 3D pieces is
wired into ``zsim predict``'s timing; the CLI refuses tensor/pipeline/sequence degrees above 1.
Expert parallelism (DeepSpeed-MoE, ``expert.py``, ``expert_zero.py``, ``expert_work.py``) is
priced by ``predict`` and ``plan`` with ``--ep``: docs/moe.md.
"""
