"""One job, one path: the run settings, and the :class:`Job` every command resolves them to.

A :class:`RunSettings` is the single typed list of what a user can set for one training run
(model, cluster, DeepSpeed config, the flags that override it, host speed, launcher). The
command line (:func:`zsim.commands.common.settings_from_args`), a DeepSpeed JSON
(``ds_config``) and the Python API (:func:`zsim.predict`, :func:`zsim.plan`, ...) all fill one
in; :func:`resolve` turns it into a frozen :class:`Job` that every stage of a prediction reads:

    RunSettings ──resolve──► Job ──► schedule ──► memory ──► simulate ──► present (Prediction)

Resolution has two halves. :func:`place` loads what does not change between the
configurations of a search (model, cluster, hardware profile at host speed, provenance, CPU
threads): a :class:`JobSite`. :func:`job_at` adds the run config of one set of run settings
on a site. ``resolve(s) = job_at(place(s), s)``; a search (``zsim plan``) places once and
calls :func:`job_at` per candidate. Defaults come from :mod:`zsim.defaults`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .defaults import DEFAULT_DS_CONFIG, DEFAULT_TOPO
from .dsconfig import OffloadDevice, Overrides, RunConfig, build_run_config
from .hardware import HardwareProfile, load_profile
from .hostcost import HostSpeed, at_host_speed, launcher_cpu_threads
from .model import ModelSpec, load_model
from .network import Cluster, load_topology
from .provenance import Provenance, profile_provenance


@dataclass(frozen=True)
class RunSettings:
    """What a user sets for one run; None means "the config's value, else the default".

    The cluster fields (``model`` to ``hardware``, ``host_speed``, ``launcher``,
    ``cpu_threads``) place the job; the run fields (:data:`RUN_FIELDS`) override the DeepSpeed
    config ``ds_config`` the way command-line flags do.
    """

    model: str | Path | ModelSpec | None = None       # preset, HF config.json or spec
    topo: str | Path = DEFAULT_TOPO                   # topology name or YAML path
    gpus: int | None = None                           # the first N GPUs of one node
    nodes: int | None = None                          # M whole nodes (neither: one node)
    ds_config: str | Path | Mapping[str, Any] | None = None
    hardware: str | Path | HardwareProfile | None = None   # None: the topology's profile
    stage: int | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    seq: int | None = None                            # sequence length in tokens
    offload_optimizer: OffloadDevice | str | None = None
    offload_param: OffloadDevice | str | None = None
    activation_checkpointing: bool | None = None
    host_speed: HostSpeed | None = None               # None: the profile's reference machine
    launcher: str | None = None                       # None: cpu_threads as given
    cpu_threads: float | None = None                  # per rank; None: the node's cores shared
    # DeepSpeed-MoE expert parallelism (zsim.parallel.expert, docs/moe.md): the model's MoE
    # blocks become deepspeed.moe.layer.MoE layers of ep_size ``ep``; ``moe_config`` holds
    # the layer's other arguments (a JSON file or mapping). Neither: the model's own blocks.
    ep: int | None = None
    moe_config: str | Path | Mapping[str, Any] | None = None

    def overrides(self) -> Overrides:
        """The run fields as :class:`zsim.dsconfig.Overrides` (each wins over ds_config)."""
        return Overrides(stage=self.stage, micro_batch=self.micro_batch, grad_accum=self.grad_accum,
                         seq_len=self.seq, offload_optimizer=self.offload_optimizer,
                         offload_param=self.offload_param,
                         activation_checkpointing=self.activation_checkpointing)

    def without_run(self) -> "RunSettings":
        """Only where the job runs: every run field None except ``seq`` (a search's base)."""
        return replace(self, **{name: None for name in RUN_FIELDS if name != "seq"})

    def with_run(self, **changes: Any) -> "RunSettings":
        """These settings with other run fields (a search's candidate on the same site)."""
        unknown = sorted(set(changes) - set(RUN_FIELDS))
        if unknown:
            raise TypeError(f"not a run field: {', '.join(unknown)} (run fields: {', '.join(RUN_FIELDS)})")
        return replace(self, **changes)


#: Settings that change only the run config, not where the job runs.
RUN_FIELDS = ("ds_config", "stage", "micro_batch", "grad_accum", "seq", "offload_optimizer",
              "offload_param", "activation_checkpointing")

#: Every field of :class:`RunSettings`, in order.
SETTING_FIELDS = tuple(f.name for f in fields(RunSettings))


@dataclass(frozen=True)
class JobSite:
    """What a job runs on, resolved once: model, cluster, hardware profile (at host speed),
    where the profile comes from, and the CPU threads of each rank."""

    model: ModelSpec
    cluster: Cluster
    hardware: HardwareProfile
    provenance: Provenance
    cpu_threads: float | None


@dataclass(frozen=True)
class Job:
    """One fully resolved, validated run: everything the prediction stages read.

    ``notes`` are the run config's notes followed by what the site adds (sequence beyond the
    model's positions, NVMe simulated as CPU, qgZ approximated).
    """

    settings: RunSettings
    model: ModelSpec
    cluster: Cluster
    hardware: HardwareProfile
    run: RunConfig
    provenance: Provenance
    cpu_threads: float | None
    notes: tuple[str, ...]

    @property
    def site(self) -> JobSite:
        """Where this job runs (shared by every :meth:`with_run` variant)."""
        return JobSite(self.model, self.cluster, self.hardware, self.provenance, self.cpu_threads)

    def with_run(self, **changes: Any) -> "Job":
        """The same site under other run fields (see :meth:`RunSettings.with_run`)."""
        return job_at(self.site, self.settings.with_run(**changes))


def place(settings: RunSettings) -> JobSite:
    """Load the model, the cluster and the hardware profile of ``settings`` (bad input raises
    :class:`~zsim.errors.ZsimInputError`)."""
    spec = load_model(settings.model)
    if settings.ep is not None or settings.moe_config is not None:
        from .parallel.expert import with_deepspeed_moe
        spec = with_deepspeed_moe(spec, settings.moe_config, settings.ep)
    cluster = load_topology(settings.topo).cluster(gpus=settings.gpus, nodes=settings.nodes)
    given = settings.hardware
    hw = given if isinstance(given, HardwareProfile) else load_profile(given or cluster.hardware)
    # Provenance names what was asked for: a loaded profile is looked up by its name.
    prov = profile_provenance(given if given is not None else cluster.hardware)
    return JobSite(spec, cluster, at_host_speed(hw, settings.host_speed), prov, _cpu_threads(settings, cluster))


def _cpu_threads(settings: RunSettings, cluster: Cluster) -> float | None:
    """Threads per rank: as given without a launcher (the API), else the launcher's rule."""
    if settings.launcher is None:
        return settings.cpu_threads
    return launcher_cpu_threads(settings.launcher, cluster.gpus_per_node, cluster.spec.node.host.cpu_cores,
                                settings.cpu_threads)


def job_at(site: JobSite, settings: RunSettings) -> Job:
    """The job of ``settings``' run fields on ``site``: the one place a :class:`Job` is made."""
    ds_config = DEFAULT_DS_CONFIG if settings.ds_config is None else settings.ds_config
    run = build_run_config(ds_config, site.model, site.cluster.world_size, settings.overrides())
    return Job(settings, site.model, site.cluster, site.hardware, run, site.provenance, site.cpu_threads,
               tuple(run.notes) + _site_notes(site.model, run, site.hardware))


def resolve(settings: RunSettings) -> Job:
    """``settings`` -> :class:`Job` (model, cluster, profile, run config; all checked)."""
    return job_at(place(settings), settings)


def _site_notes(spec: ModelSpec, run: RunConfig, hw: HardwareProfile) -> tuple[str, ...]:
    """What the prediction approximates for this run, in the order `zsim predict` prints it."""
    notes = []
    if not hw.host.prices_code_paths:
        notes.append(f"hardware profile {hw.name} has no measured host speed: DeepSpeed's per-tensor "
                     "host loops are not priced and kernel dispatch uses its flat guess, so host-bound "
                     "steps (small models, ZeRO-3, eager HF code) are optimistic")
    elif hw.host.speed_from:
        notes.append(f"hardware profile {hw.name} prices host time with the host speed measured for "
                     f"{hw.host.speed_from} (transferred, not measured on this machine's CPU): "
                     "host-bound steps may be off by the CPUs' speed ratio")
    if run.seq_len > spec.max_position_embeddings:
        notes.append(f"seq {run.seq_len} exceeds the model's max_position_embeddings "
                     f"{spec.max_position_embeddings}")
    if OffloadDevice.NVME in (run.zero.offload_optimizer, run.zero.offload_param):
        notes.append("nvme offload is simulated as cpu offload: NVMe swap bandwidth is not "
                     "modelled yet, so offloaded steps are optimistic")
    if run.zero.zero_quantized_gradients and run.zero.stage == 3:
        notes.append("ZeRO++ qgZ is approximated (int4 all_to_all pairs per gradient bucket; "
                     "not checked against DeepSpeed's comms logger)")
    if spec.deepspeed_moe is not None:
        from .parallel.expert import expert_note
        notes.append(expert_note(spec, run))
    return tuple(notes)


__all__ = ["RunSettings", "RUN_FIELDS", "SETTING_FIELDS", "JobSite", "Job", "place", "job_at", "resolve"]
