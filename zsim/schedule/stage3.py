"""ZeRO stage 3 (deepspeed/runtime/zero/stage3.py = S3): gathers, releases, reduce-scatters.

The hook events of a micro-step (z3modules) drive a re-implementation of the coordinator
(coordinator.py). History is simulated from the first micro-step (trace recording) so that
the step whose ops are emitted is the second optimizer step — identical to every later one
(the coordinator's caches are filled by then and every step starts from the same state after
``partition_all``).

Gradients: a hook per parameter appends it to the IPG bucket in autograd order; the bucket is
reduced first when ``elements + numel > reduce_bucket_size`` and it is not empty (S3:1583)
— there is no bypass for oversized gradients as in stage 1/2 — on EVERY micro-step, with ONE
``reduce_scatter_tensor`` over the interleaved, per-parameter padded flat buffer
(runtime/comm/coalesced_collectives.py:81-141; logged size = sum of ceil(numel/N)·N
elements). With reduce_scatter=false and contiguous_gradients a bucket that fits is
all-reduced instead (S3:1672-1674); an oversized one is still reduce-scattered.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..dsconfig import OffloadDevice, RunConfig
from ..groups import INTER_NODE, INTRA_NODE, WORLD
from ..model import ModelSpec
from .coordinator import Coordinator
from .emit import CountingEmitter, Emitter, NullEmitter
from .events import Checkpoint, Compute, ComputeCore, Fetch, Grad, Leftovers, Release
from .facts import ScheduleFacts
from .hostwork import (STAGE3_BACKWARD, STAGE3_HOOK_GATHER, STAGE3_HOOK_PARTITION, STAGE3_HOOK_WAIT,
                       host_loop)
from .params import stage3_padded_numel, stage3_shard_numel
from .passes import checkpoint_overhead
from .step import stage3_step
from .tape import coordinator_for, emitted_step, tape_key
from .z3modules import hook_events

HOOK_OVERHEAD = "zero3_module_hook_s"


def persistent_params(numels: list[int], run: RunConfig) -> list[bool]:
    """parameter_offload.py:317-335: in named_parameters order, a parameter persists if its
    numel ≤ stage3_param_persistence_threshold while the running total stays within
    stage3_model_persistence_threshold (the raw value; zero.Init's copy divides it by N,
    partition_parameters.py:1198, but the offload pass marks every qualifying one again)."""
    z = run.zero
    total, out = 0, []
    for n in numels:
        if n + total > z.stage3_model_persistence_threshold:
            out.append(False)
            continue
        keep = n <= z.stage3_param_persistence_threshold
        out.append(keep)
        total += n if keep else 0
    return out


def sub_groups(numels: list[int], run: RunConfig) -> list[int]:
    """Local partition numel of each optimizer sub-group (S3:1210-1233)."""
    shards = [stage3_shard_numel(n, run.world_size) for n in numels]
    size = run.zero.sub_group_size
    if size >= sum(shards):
        return [sum(shards)]
    out, acc = [], 0
    for k, s in enumerate(shards):
        acc += s
        if acc >= size or k == len(shards) - 1:
            out.append(acc)
            acc = 0
    return out


class _Stage3:
    """Simulation + emission state for one build. The history steps run through a
    :class:`NullEmitter`; :meth:`start_emitting` switches to the emitter that records."""

    def __init__(self, model: ModelSpec, run: RunConfig, numels: list[int],
                 gpus_per_node: int | None = None):
        self.run, self.numels = run, numels
        z = run.zero
        self.n = run.world_size
        self.gpus_per_node = gpus_per_node or run.world_size
        self.mods, self.events = hook_events(model, run.activation_checkpointing)
        self.persist = persistent_params(numels, run)
        # Per-parameter sizes, computed once: every gather, release and bucket sums them.
        self.padded = [stage3_padded_numel(n, self.n) for n in numels]
        self.shard = [stage3_shard_numel(n, self.n) for n in numels]
        self.em: Emitter = NullEmitter(run.world_size)
        # The coordinator's gathers are numbered in call order (tokens, see zsim.schedule.tape):
        # a later build of the same tape key plays its decisions back instead of recomputing.
        self.handles: list[int | None] = []     # the op id (or None) of each gather, by token
        self.coord = coordinator_for(
            tape_key(model, numels, self.persist, run),
            lambda gather, released: Coordinator(
                self.mods, numels, self.persist, z.stage3_prefetch_bucket_size,
                z.stage3_max_live_parameters, z.stage3_max_reuse_distance, gather, released=released),
            self._gather_token, self._released)
        self.gathered = 0          # padded numel of non-persistent params gathered now
        self.max_gathered = 0
        self.hooks_pending = 0
        self.moves_pending = _HookMoves()   # what the hooks since the last op gathered/released
        self.moves_emitted = _HookMoves()   # and over the emitted step
        self.waited: set[int] = set()       # gather handles already waited on
        self.fetch_events: deque[int] = deque()    # gathers the host waited on, oldest first
        self.reduce_events: deque[int] = deque()   # gradient reductions issued, oldest first
        self.bucket: list[int] = []
        self.bucket_elems = 0
        self.last_reduce: int | None = None
        self.num_buckets = 0
        self.secondary: set[int] = set()   # hpZ: params with a live secondary shard

    # ---- callbacks from the coordinator
    def _gather_token(self, params: list[int], forward: bool) -> int:
        """Emit the gather and hand the coordinator its token (index into ``handles``)."""
        self.handles.append(self._gather(params, forward))
        return len(self.handles) - 1

    def _gather(self, params: list[int], forward: bool) -> int | None:
        self.moves_pending.gathered += len(params)
        for p in params:
            if not self.persist[p]:
                self.gathered += self.padded[p]
        self.max_gathered = max(self.max_gathered, self.gathered)
        return self._emit_gather(params, forward)

    def _released(self, p: int) -> None:
        self.moves_pending.partitioned += 1
        if not self.persist[p]:
            self.gathered -= self.padded[p]
        if self.run.zero.zero_hpz_partition_size > 1:
            # partition() of an available param keeps a secondary shard for the hpZ group
            # (partition_parameters.py:1765-1769, 1900-1926) until the step invalidates it
            # (stage3.py:755-759 from _post_step)
            self.secondary.add(p)

    def _emit_gather(self, params: list[int], forward: bool) -> int | None:
        """One all_gather_coalesced: one all_gather_into_tensor over the concatenated shards
        (partition_parameters.py:1329-1371; a single parameter: one call, same size).
        ZeRO++ hpZ: parameters that hold a secondary shard are gathered in a separate call
        inside the hpZ group (PC:597-612, partition_parameters.py:1572-1574), each rank
        sending aligned_numel/hpz elements; qwZ moves int8 (scales not counted)."""
        run = self.run
        z = run.zero
        hpz = z.zero_hpz_partition_size
        with_sec = [p for p in params if p in self.secondary]
        without = [p for p in params if p not in self.secondary]
        handle = None
        for group in (with_sec, without):
            if group:
                handle = self._emit_one_gather(group, hpz if group is with_sec else 0)
        return handle  # the compute waits for the last one (same stream, issued in order)

    def _emit_one_gather(self, params: list[int], hpz: int) -> int | None:
        run, em = self.run, self.em
        z = run.zero
        elem = 1 if z.zero_quantized_weights else run.param_bytes
        if hpz:
            shard = sum(self.padded[p] // hpz for p in params)
            group_size, group = hpz, INTRA_NODE
        else:
            shard = sum(self.shard[p] for p in params)
            group_size, group = self.n, WORLD
        deps = ()
        if z.offload_param != OffloadDevice.NONE:  # shards live on the host: copy them in first (PP:1358-1361)
            deps = (em.add("h2d", "copy", "param_shards_to_device", nbytes=shard * run.param_bytes),)
        return em.collective("allgather_params", "all_gather_into_tensor", shard * elem, stream="comm",
                             deps=deps, group=group, buffer_bytes=shard * group_size * elem)

    # ---- gradient buckets
    def _grad(self, p: int) -> None:
        host_loop(self.em, "grad_hook", STAGE3_BACKWARD, 1)
        n = self.numels[p]
        if self.bucket_elems + n > self.run.zero.reduce_bucket_size and self.bucket_elems > 0:
            self._flush()
        self.bucket.append(p)
        self.bucket_elems += n

    def _flush(self) -> None:
        if not self.bucket:
            return
        self.num_buckets += 1
        z = self.run.zero
        stream = "comm" if z.overlap_comm else "compute"
        _throttle(self.em, self.reduce_events, None, "reduce_throttle")
        self.last_reduce = self._emit_reduction(stream, (self.em.last_compute,))
        self.reduce_events.append(self.last_reduce)
        if z.offload_optimizer != OffloadDevice.NONE:  # each bucket's fp32 grad shards go to the host
            shard = sum(self.shard[p] for p in self.bucket)
            self.em.add("d2h", "copy", "grad_shards_to_host", deps=(self.last_reduce,), nbytes=4 * shard)
        self.bucket, self.bucket_elems = [], 0

    def _emit_reduction(self, stream: str, deps: tuple) -> int | None:
        """The bucket's reduction: qgZ across nodes, an all_reduce (reduce_scatter off, the
        bucket fits) or a reduce_scatter_tensor of the padded flat buffer."""
        run, z = self.run, self.run.zero
        cb = run.comm_dtype_bytes
        nodes = self.n // self.gpus_per_node if self.n % self.gpus_per_node == 0 else 1
        if z.zero_quantized_gradients and nodes > 1:
            return self._emit_qgz(stream, deps)
        if z.contiguous_gradients and self.bucket_elems <= z.reduce_bucket_size and not z.reduce_scatter:
            return self.em.collective("grad_bucket", "all_reduce", self.bucket_elems * cb,
                                      stream=stream, deps=deps)
        total = sum(self.padded[p] for p in self.bucket)
        return self.em.collective("grad_bucket", "reduce_scatter_tensor", total * cb,
                                  stream=stream, deps=deps)

    def _emit_qgz(self, stream: str, deps: tuple) -> int | None:
        """ZeRO++ qgZ (all_to_all_quant_reduce, runtime/comm/coalesced_collectives.py:31-75):
        gradients quantized to int4 go through an intra-node all_to_all, are reduced, and the
        reduced int4 data (1/gpus_per_node of it) goes through an inter-node all_to_all.

        Approximation, not checked against the comms logger (qgZ needs DeepSpeed's CUDA
        quantizer): one pair of all_to_all_single per bucket rather than per tensor, scales
        not counted, no fallback for tensors not divisible by 2·world_size.
        """
        total = sum(self.padded[p] for p in self.bucket)
        int4_bytes = total // 2
        intra = self.em.collective("grad_bucket_qgz_intra", "all_to_all_single", int4_bytes,
                                   stream=stream, deps=deps, group=INTRA_NODE)
        return self.em.collective("grad_bucket_qgz_inter", "all_to_all_single",
                                  int4_bytes // self.gpus_per_node, stream=stream, deps=(intra,),
                                  group=INTER_NODE)

    # ---- one micro-step
    def micro_step(self) -> None:
        """Replay the hook events of one forward+backward."""
        self.coord.reset_step()
        self.em.phase = "forward"
        waits: dict[str, list] = {}
        for ev in self.events:
            match ev:
                case Fetch(module=m, forward=forward):  # a pre hook: gather (and prefetch)
                    self.hooks_pending += 1
                    handles = [self.handles[t] for t in self.coord.fetch(m, forward)]
                    self._count_waits(handles)
                    if not forward and self.em.phase == "forward":
                        self.em.phase = "backward"
                    name = self.mods[m].compute
                    if name:  # the module's compute waits for its gathers
                        waits.setdefault(name, []).extend(h for h in handles if h is not None)
                case Release(module=m, forward=forward):
                    self.hooks_pending += 1
                    self.coord.release(m, forward)
                case Compute(name=name, pass_=pass_):
                    self._compute(name, pass_, waits.pop(name, []))
                case ComputeCore(module=m):
                    name = self.mods[m].compute
                    self._compute(name, "bwd", waits.pop(name, []))
                case Grad(param=p):
                    self._grad(p)
                case Checkpoint(pass_=pass_):
                    checkpoint_overhead(self.em, pass_)
                case Leftovers():
                    self._leftovers()

    def _count_waits(self, handles: list) -> None:
        """One synchronize per handle, the first time it is waited on: a coalesced handle
        returns at once after that (partition_parameters.py:108-118)."""
        for h in handles:
            if h is None or h not in self.waited:
                self.moves_pending.waits += 1
                if h is not None:
                    self.waited.add(h)

    def _leftovers(self) -> None:
        """End of backward: the last bucket, the epilogue synchronize, the leftovers."""
        self._flush()
        if self.last_reduce is not None and self.run.zero.overlap_comm:
            self.em.wait_for.append(self.last_reduce)  # epilogue synchronize (S3:1413-1414)
        self.coord.release_backward_leftovers()
        self._flush_hooks()

    def _flush_hooks(self) -> None:
        """The host time of the module hooks run since the last compute op (pre/post
        forward/backward of every module, containers included)."""
        if self.hooks_pending:
            self.em.add("compute", "overhead", "zero3_hooks", overhead=HOOK_OVERHEAD, count=self.hooks_pending)
        self.hooks_pending = 0
        self._flush_moves("zero3_hook_moves")

    def _flush_moves(self, name: str) -> int | None:
        """The host time of the parameter moves since the last flush (see _HookMoves)."""
        mv = self.moves_pending
        if not (mv.gathered or mv.waits or mv.partitioned):
            return None   # nothing moved since the last flush (most computes): no op, nothing to add
        self.moves_pending = _HookMoves()
        self.moves_emitted.add(mv)
        ops = (STAGE3_HOOK_PARTITION.ops(mv.partitioned) + STAGE3_HOOK_GATHER.ops(mv.gathered)
               + STAGE3_HOOK_WAIT.ops(mv.waits))
        return self.em.add("compute", "host_loop", name, count=ops) if ops else None

    def _compute(self, name: str, pass_: str, waits: list) -> None:
        self._flush_hooks()
        for handle in waits:
            _throttle(self.em, self.fetch_events, handle, "fetch_throttle")
        self.em.wait_for.extend(waits)
        self.em.compute(name, pass_)

    def step_boundary(self) -> None:
        """The optimizer step: partition everything, then re-gather persistent params."""
        self._flush_hooks()
        self.em.phase = "step"
        held = self.coord.held_count()
        self.coord.partition_all()            # S3:2877-2878, before anything else of the step
        self.moves_pending = _HookMoves()     # the prelude prices these partitions itself
        stage3_step(self.em, self.run, sub_groups(self.numels, self.run),
                    [stage3_shard_numel(n, self.n) for n, keep in zip(self.numels, self.persist) if keep],
                    tensors=len(self.numels), gathered=held)
        self.coord.regather_persistent()
        self.secondary.clear()

    def start_emitting(self, emitter: Emitter) -> None:
        """Record through ``emitter`` from here on (the steady-state step). The history ran
        the same code through a :class:`NullEmitter`, whose ops have no ids: drop the
        throttle queues it filled with them, and restart the per-step counters."""
        self.em = emitter
        self.fetch_events.clear()
        self.reduce_events.clear()
        self.last_reduce = None
        self.max_gathered, self.num_buckets, self.hooks_pending = self.gathered, 0, 0
        self.moves_emitted = _HookMoves()


@dataclass
class _HookMoves:
    """Parameters the hooks moved since the last flush: gathered (handles set up), handles
    waited on, and partitioned (released); priced by hostwork.STAGE3_HOOK_*."""

    gathered: int = 0
    waits: int = 0
    partitioned: int = 0

    def add(self, other: "_HookMoves") -> None:
        """Count ``other``'s moves in this tally too."""
        self.gathered += other.gathered
        self.waits += other.waits
        self.partitioned += other.partitioned


#: PC:142 (``__max_ongoing_fetch_events``) and S3:462 (``max_param_reduce_events``): DeepSpeed
#: records a CUDA event per gather waited on and per bucket reduced, and once more than two
#: are outstanding the host synchronises on the oldest (PC:400-411, S3:1664-1667); on CUDA
#: ``handles_memory_backpressure()`` is False (accelerator/cuda_accelerator.py:61-62), so the
#: throttle is active.
MAX_ONGOING_EVENTS = 2


def _throttle(em: Emitter, events: deque, new: int | None, name: str) -> None:
    """DeepSpeed's host throttle on ``events``: with ``new`` (a gather just waited on) record
    it, then past :data:`MAX_ONGOING_EVENTS` outstanding wait for the oldest; without (a
    reduction about to be issued) wait while more than that many are outstanding. The wait
    is a zero-cost host op that depends on the event's op."""
    if new is not None:
        events.append(new)
    while len(events) > MAX_ONGOING_EVENTS:
        em.add("compute", "host_loop", name, deps=(events.popleft(),), count=0)


def stage3_inputs(run: RunConfig) -> tuple:
    """Every field of ``run`` that :func:`emit_stage3` (and the step it emits) reads. The
    batch shape is not one: micro-batch, sequence length and train batch price the ops
    later (zsim.workload) without changing them, so runs that differ only there build the
    same ops (``tests/test_engine_in_order.py`` checks it). Add a field here when the
    emission starts reading it."""
    return (run.world_size, run.grad_accum, run.precision, run.comm_dtype_bytes, run.zero,
            run.activation_checkpointing, run.gradient_clipping)


def emit_stage3(model: ModelSpec, run: RunConfig, numels: list[int],
                gpus_per_node: int | None = None) -> tuple[Emitter, ScheduleFacts]:
    """All ops of the second (steady-state) optimizer step, and its size facts."""
    sim = _replay(model, run, numels, gpus_per_node, Emitter(run.world_size))
    return sim.em, _facts(sim.num_buckets // run.grad_accum, sim.max_gathered, sim.persist,
                          _moves_tuple(sim.moves_emitted), run, numels)


def stage3_facts(model: ModelSpec, run: RunConfig, numels: list[int],
                 gpus_per_node: int | None = None) -> ScheduleFacts:
    """``emit_stage3(...)[1]`` without building the ops: the same replay, the emitted step
    numbered by a :class:`CountingEmitter` (the facts read op ids, never op fields). With a
    tape of the run's coordinator kept, no replay: the gathered peak and hook moves are the
    tape's (every gather of a replay that emits has its own handle, so they follow from the
    coordinator's calls), and the gradient buckets are cut again (:func:`_buckets_per_micro`)."""
    persist = persistent_params(numels, run)
    emitted = emitted_step(tape_key(model, numels, persist, run))
    if emitted is None:
        sim = _replay(model, run, numels, gpus_per_node, CountingEmitter(run.world_size))
        return _facts(sim.num_buckets // run.grad_accum, sim.max_gathered, sim.persist,
                      _moves_tuple(sim.moves_emitted), run, numels)
    max_gathered, moves = emitted
    return _facts(_buckets_per_micro(model, run, numels), max_gathered, persist, moves, run, numels)


def _moves_tuple(moves: "_HookMoves") -> tuple[int, int, int]:
    return (moves.gathered, moves.waits, moves.partitioned)


def _buckets_per_micro(model: ModelSpec, run: RunConfig, numels: list[int]) -> int:
    """The gradient buckets one micro-step reduces, cut as :meth:`_Stage3._grad` and
    :meth:`_Stage3._leftovers` cut them over the ``grad_accum`` micro-steps of a step."""
    events = hook_events(model, run.activation_checkpointing)[1]
    size, count, elems, held = run.zero.reduce_bucket_size, 0, 0, False
    for _ in range(run.grad_accum):
        for ev in events:
            if type(ev) is Grad:
                n = numels[ev.param]
                if elems + n > size and elems > 0:
                    count, elems = count + 1, 0
                elems, held = elems + n, True
            elif type(ev) is Leftovers and held:
                count, elems, held = count + 1, 0, False
    return count // run.grad_accum


#: What the history step leaves in a :class:`_Stage3` besides the coordinator (its emitter is
#: replaced, its per-step counters restart in ``start_emitting``): kept on the tape so that a
#: played-back build skips the history. ``tests/test_stage3_tape.py`` compares the builds.
_HISTORY_STATE = ("gathered", "secondary", "waited", "handles", "bucket", "bucket_elems",
                  "hooks_pending", "moves_pending", "last_reduce", "fetch_events", "reduce_events")


def _replay(model: ModelSpec, run: RunConfig, numels: list[int], gpus_per_node: int | None,
            emitter: Emitter) -> _Stage3:
    """The first optimizer step through a NullEmitter, then the second through ``emitter``."""
    sim = _Stage3(model, run, numels, gpus_per_node)
    after_history = sim.coord.skip_history()   # played back: the state the history leaves
    if after_history is None:
        for _ in range(run.grad_accum):       # step 0: trace recording + accumulation
            sim.micro_step()
        sim.step_boundary()
        sim.coord.history_done({name: getattr(sim, name) for name in _HISTORY_STATE})
    else:
        for name, value in after_history.items():
            setattr(sim, name, value)
    sim.start_emitting(emitter)
    for micro in range(run.grad_accum):
        sim.em.micro = micro
        sim.micro_step()
    sim.step_boundary()
    sim.coord.finish((sim.max_gathered, _moves_tuple(sim.moves_emitted)))
    # The coordinator's callbacks are bound to ``sim``: a reference cycle that would keep the
    # build (its events, module tree and emitter) until a cyclic collection, which a search
    # runs rarely (zsim/gcpolicy.py). Nothing reads the coordinator after the replay.
    sim.coord = None
    return sim


def _facts(buckets: int, max_gathered: int, persist: list[bool], moves: tuple[int, int, int],
           run: RunConfig, numels: list[int]) -> ScheduleFacts:
    """The size facts of the replayed step (buckets per micro-step, the gathered peak and hook
    moves counted while the second step ran)."""
    z = run.zero
    return ScheduleFacts(
        partition_numel=sum(stage3_shard_numel(n, run.world_size) for n in numels),
        padded_numel=sum(stage3_padded_numel(n, run.world_size) for n in numels),
        ipg_buffer_elems=z.reduce_bucket_size if z.contiguous_gradients else 0,
        ipg_buffer_count=1 if z.contiguous_gradients else 0,
        num_buckets=buckets,
        max_gathered_numel=max_gathered,
        persistent_numel=sum(n for n, keep in zip(numels, persist) if keep),
        largest_param_numel=max(numels), num_params=sum(numels),
        hook_moves=moves,
    )
