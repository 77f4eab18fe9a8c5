"""The stage-3 coordinator's decisions, recorded once and played back in later builds.

A search builds many ZeRO-3 schedules that differ only in what the coordinator never reads:
the gradient bucket size, optimizer offload, micro-batch... Its decisions (which parameters
each hook gathers, which it releases, which gathers a compute waits for) follow from the
model, the checkpointing, the grad-accum (the calls it gets) and its own settings
(:func:`tape_key`), never from the ops emitted: it keeps the handles a gather returns without
looking at them. So :class:`TapeRecorder` drives a real :class:`Coordinator` and writes down,
per call, the callbacks it made and what it returned, with gathers numbered in call order
instead of handles; :class:`TapePlayer` makes the same callbacks and returns the same values
from that record without the coordinator's bookkeeping (about half of a replay's time).
"""

from __future__ import annotations

import copy
from typing import Callable

from .coordinator import Coordinator

#: One coordinator call: (method and arguments, callbacks made: ``(params, forward)`` for a
#: gather or a parameter index for a release, the value returned).
Entry = tuple[tuple, tuple, object]

#: Tapes kept by key (the last ones used; a search comes back to a few settings at a time).
TAPES_KEPT = 16
#: Each: the tape, where its history step ends and the state it leaves, the emitted step's totals.
_TAPES: dict[tuple, tuple[list[Entry], tuple[int, dict], tuple]] = {}


def tape_key(model, numels: list[int], persist: list[bool], run) -> tuple:
    """Everything the coordinator's calls and decisions depend on in one replay of ``run``."""
    z = run.zero
    # the world size pads the sizes the builder sums (the state the history leaves)
    return (model, run.world_size, tuple(numels), tuple(persist), z.stage3_prefetch_bucket_size,
            z.stage3_max_live_parameters, z.stage3_max_reuse_distance,
            run.activation_checkpointing, run.grad_accum)


def coordinator_for(key: tuple, make: Callable[[Callable, Callable], Coordinator],
                    gather: Callable, released: Callable):
    """A player of the tape recorded under ``key``, or a recorder that stores its tape there
    once :meth:`TapeRecorder.finish` is called. ``make(gather, released)`` builds the real
    coordinator with those callbacks."""
    recorded = _TAPES.get(key)
    if recorded is not None:
        _TAPES[key] = _TAPES.pop(key)   # the most recently used last
        return TapePlayer(recorded, gather, released)
    return TapeRecorder(key, make, gather, released)


def emitted_step(key: tuple) -> tuple | None:
    """What the emitted step's gathers and releases came to in the replay that recorded
    ``key`` (see :meth:`TapeRecorder.finish`), or None when no tape is kept."""
    recorded = _TAPES.get(key)
    return None if recorded is None else recorded[2]


class _CoordinatorCalls:
    """The :class:`Coordinator` methods a stage-3 build calls, each one :meth:`_call`: the
    recorder forwards and writes it down, the player reads it back."""

    def _call(self, *call):
        raise NotImplementedError

    def reset_step(self) -> None:
        """See :meth:`Coordinator.reset_step`."""
        self._call("reset_step")

    def fetch(self, m: int, forward: bool) -> list:
        """See :meth:`Coordinator.fetch`."""
        return list(self._call("fetch", m, forward))

    def release(self, m: int, forward: bool) -> None:
        """See :meth:`Coordinator.release`."""
        self._call("release", m, forward)

    def release_backward_leftovers(self) -> None:
        """See :meth:`Coordinator.release_backward_leftovers`."""
        self._call("release_backward_leftovers")

    def held_count(self) -> int:
        """See :meth:`Coordinator.held_count`."""
        return self._call("held_count")

    def partition_all(self) -> None:
        """See :meth:`Coordinator.partition_all`."""
        self._call("partition_all")

    def regather_persistent(self) -> None:
        """See :meth:`Coordinator.regather_persistent`."""
        self._call("regather_persistent")


class TapeRecorder(_CoordinatorCalls):
    """Forwards each call to a real coordinator and records it (see the module docstring)."""

    def __init__(self, key: tuple, make: Callable, gather: Callable, released: Callable):
        self.key = key
        self._gather_cb, self._released_cb = gather, released
        self.tape: list[Entry] = []
        self._made: list = []
        self.history: tuple[int, dict] | None = None   # where the history ended, and its state
        self.coord = make(self._gather, self._released)

    def _gather(self, params: list[int], forward: bool):
        self._made.append((tuple(params), forward))
        return self._gather_cb(params, forward)

    def _released(self, p: int) -> None:
        self._made.append(p)
        self._released_cb(p)

    def _call(self, name: str, *args):
        self._made = []
        out = getattr(self.coord, name)(*args)
        self.tape.append(((name, *args), tuple(self._made), out))
        return out

    def history_done(self, state: dict) -> None:
        """The history step ended here, leaving the builder in ``state`` (see
        :meth:`TapePlayer.skip_history`)."""
        self.history = (len(self.tape), copy.deepcopy(state))

    def skip_history(self) -> dict | None:
        """Recording: the history must run (None)."""
        return None

    def finish(self, emitted: tuple) -> None:
        """Keep the tape for later builds of the same key (the replay ran to its end), with
        ``emitted``: the emitted step's totals that follow from the tape alone."""
        self.coord = None   # its callbacks are bound to this recorder: no cycle left behind
        if self.history is None:
            return   # a replay that never marked its history: nothing a player could skip
        _TAPES[self.key] = (self.tape, self.history, emitted)
        if len(_TAPES) > TAPES_KEPT:
            del _TAPES[next(iter(_TAPES))]


class TapePlayer(_CoordinatorCalls):
    """Makes a recorded replay's callbacks and returns its values, call by call. A call that
    is not the one recorded means the key missed an input: it raises rather than guess."""

    def __init__(self, recorded: tuple, gather: Callable, released: Callable):
        tape, self._history = recorded[:2]
        self._tape = iter(tape)
        self._gather_cb, self._released_cb = gather, released

    def skip_history(self) -> dict:
        """Skip the history step's calls and return the builder's state after it, as the
        recording left it. The history runs through a NullEmitter (no op, no handle), so what
        it leaves besides the coordinator's state is that of the gathers and releases, the
        same for every run of the key."""
        end, state = self._history
        for _ in range(end):
            next(self._tape)
        return copy.deepcopy(state)

    def history_done(self, state: dict) -> None:
        """Nothing to note (the tape has it)."""

    def _call(self, *call):
        recorded, made, out = next(self._tape)
        if recorded != call:
            raise RuntimeError(f"stage-3 tape out of step: {call} where {recorded} was recorded")
        for cb in made:
            if type(cb) is int:
                self._released_cb(cb)
            else:
                self._gather_cb(list(cb[0]), cb[1])
        return out

    def finish(self, emitted: tuple) -> None:
        """Nothing to keep (the tape is already stored)."""
