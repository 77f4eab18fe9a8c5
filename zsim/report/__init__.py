"""`zsim report`: a self-contained HTML page and a Markdown twin with the figures a team needs
to pick a ZeRO configuration: memory and step time per stage, a timeline of one step, scaling
with node count, throughput vs micro-batch, Memory_ZeRO3 vs Memory_baseline / N, and a
recommendation that names the configuration and why.

API: :func:`build_report` (collect + write), :func:`zsim.report.data.collect`.
"""

from .build import ReportFiles, build_report

__all__ = ["build_report", "ReportFiles"]
