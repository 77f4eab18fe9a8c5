"""Parallelism beyond data parallelism: the 3D layout, Megatron's activation memory, the
pipeline schedules (1F1B, DeepSpeed's pipeline engine), the TP/Ulysses split of one rank
(``tensor``), each stage's representative rank (``stages``) and its memory and step floor
without simulation (``stagemem``), the 3D prediction (``predict3d``: `zsim predict
--tp/--pp/--sp`) and the joint search (``plan3d``: `zsim plan --search-3d`).

What is modelled and what is not yet: docs/parallelism.md. Expert parallelism (DeepSpeed-MoE,
``expert.py``, ``expert_zero.py``, ``expert_work.py``) is priced by ``predict`` and ``plan``
with ``--ep``: docs/moe.md.
"""
