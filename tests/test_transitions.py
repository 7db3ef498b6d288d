"""Every (state, event) pair of every actor kind: allowed exactly where the design says."""

from __future__ import annotations

import itertools

import pytest

from stixd.actors.cluster import ClusterActor, ClusterEvent
from stixd.actors.job import JobActor, JobEvent, fold
from stixd.actors.job_pool import JobPoolActor, PoolEvent
from stixd.actors.managed_job import ManagedJobActor, MEvent
from stixd.runtime.machine import TransitionError
from stixproto.states import ClusterStatus as C
from stixproto.states import JobStatus as J
from stixproto.states import ManagedJobStatus as M
from stixproto.states import PoolStatus as P

E = ClusterEvent
CLUSTER_EXPECTED = {
    # a new incarnation of a name, or a launch retried while provisioning
    (C.TERMINATED, E.LAUNCH): C.INIT,
    (C.INIT, E.LAUNCH): C.INIT,
    (C.STOPPED, E.LAUNCH): C.INIT,
    (C.STOPPED, E.START): C.INIT,
    # provisioning ends
    (C.INIT, E.PROVISIONED): C.UP,
    (C.INIT, E.PROVISION_FAILED): C.INIT,
    # user stop / down: the intent first, from every live state (a launch under way, too;
    # a down overrides a stop or autostop in flight) ...
    (C.INIT, E.STOP): C.STOPPING,
    (C.UP, E.STOP): C.STOPPING,
    (C.INIT, E.TERMINATE): C.TERMINATING,
    (C.UP, E.TERMINATE): C.TERMINATING,
    (C.AUTOSTOPPING, E.TERMINATE): C.TERMINATING,
    (C.STOPPED, E.TERMINATE): C.TERMINATING,
    (C.STOPPING, E.TERMINATE): C.TERMINATING,
    # ... then the provider's answer: done, or refused (SkyPilot's INIT: may be live or down)
    (C.STOPPING, E.STOPPED): C.STOPPED,
    (C.TERMINATING, E.TERMINATED): C.TERMINATED,
    (C.STOPPING, E.STOP_FAILED): C.INIT,
    (C.TERMINATING, E.TERMINATE_FAILED): C.INIT,
    # autostop: AUTOSTOPPING is its intent, then the same answers
    (C.UP, E.AUTOSTOP): C.AUTOSTOPPING,
    (C.AUTOSTOPPING, E.STOPPED): C.STOPPED,
    (C.AUTOSTOPPING, E.TERMINATED): C.TERMINATED,
    (C.AUTOSTOPPING, E.STOP_FAILED): C.INIT,
    (C.AUTOSTOPPING, E.TERMINATE_FAILED): C.INIT,
    # reconcile: what the provider reports wins over what the store says
    (C.INIT, E.FOUND_UP): C.UP,
    (C.AUTOSTOPPING, E.FOUND_UP): C.UP,
    (C.STOPPED, E.FOUND_UP): C.UP,
    (C.INIT, E.FOUND_STOPPED): C.STOPPED,
    (C.UP, E.FOUND_STOPPED): C.STOPPED,
    (C.AUTOSTOPPING, E.FOUND_STOPPED): C.STOPPED,
    (C.INIT, E.FOUND_GONE): C.TERMINATED,
    (C.UP, E.FOUND_GONE): C.TERMINATED,
    (C.AUTOSTOPPING, E.FOUND_GONE): C.TERMINATED,
    (C.STOPPED, E.FOUND_GONE): C.TERMINATED,
    (C.UP, E.FOUND_DEGRADED): C.INIT,
    (C.AUTOSTOPPING, E.FOUND_DEGRADED): C.INIT,
    (C.STOPPED, E.FOUND_DEGRADED): C.INIT,
}

JE = JobEvent
_ENDS = {
    JE.SUCCEEDED: J.SUCCEEDED,
    JE.FAILED: J.FAILED,
    JE.FAILED_SETUP: J.FAILED_SETUP,
    JE.FAILED_DRIVER: J.FAILED_DRIVER,
    JE.CANCELLED: J.CANCELLED,
}
JOB_EXPECTED = {
    (J.INIT, JE.SUBMITTED): J.PENDING,
    (J.INIT, JE.SETUP_STARTED): J.SETTING_UP,
    (J.INIT, JE.RUN_STARTED): J.RUNNING,
    (J.PENDING, JE.SETUP_STARTED): J.SETTING_UP,
    (J.PENDING, JE.RUN_STARTED): J.RUNNING,
    (J.SETTING_UP, JE.RUN_STARTED): J.RUNNING,
}
for state in (J.INIT, J.PENDING, J.SETTING_UP, J.RUNNING):
    for event, end in _ENDS.items():
        if state is J.RUNNING and event is JE.FAILED_SETUP:
            continue  # setup is over once the run has started
        JOB_EXPECTED[(state, event)] = end

ME = MEvent
MANAGED_EXPECTED = {
    (M.PENDING, ME.START): M.STARTING,
    # the task cannot run anywhere: refused before any cluster exists, or when a launch says so
    (M.PENDING, ME.FAILED_PRECHECKS): M.FAILED_PRECHECKS,
    (M.STARTING, ME.FAILED_PRECHECKS): M.FAILED_PRECHECKS,
    # the run passed its setup (setup counts as starting, as in SkyPilot)
    (M.STARTING, ME.UP): M.RUNNING,
    (M.RECOVERING, ME.UP): M.RUNNING,
    # launches exhausted
    (M.STARTING, ME.NO_RESOURCE): M.FAILED_NO_RESOURCE,
    (M.RECOVERING, ME.NO_RESOURCE): M.FAILED_NO_RESOURCE,
    # cancel from every live state, then the cluster is torn down
    **{(s, ME.CANCEL): M.CANCELLING for s in (M.PENDING, M.STARTING, M.RUNNING, M.RECOVERING)},
    (M.CANCELLING, ME.CANCELLED): M.CANCELLED,
    # the daemon itself gave up on the job
    **{
        (s, ME.CONTROLLER_FAILED): M.FAILED_CONTROLLER
        for s in (M.PENDING, M.STARTING, M.RUNNING, M.RECOVERING, M.CANCELLING)
    },
}
for in_play in (M.STARTING, M.RUNNING, M.RECOVERING):  # a cluster in play: a run may end anytime
    MANAGED_EXPECTED[(in_play, ME.LOST)] = M.RECOVERING
    MANAGED_EXPECTED[(in_play, ME.RESTART)] = M.RECOVERING
    MANAGED_EXPECTED[(in_play, ME.NEXT_TASK)] = M.STARTING
    MANAGED_EXPECTED[(in_play, ME.SUCCEEDED)] = M.SUCCEEDED
    MANAGED_EXPECTED[(in_play, ME.FAILED)] = M.FAILED
    MANAGED_EXPECTED[(in_play, ME.FAILED_SETUP)] = M.FAILED_SETUP

PE = PoolEvent
POOL_EXPECTED = {
    # apply creates, resizes, retries a failed pool, or relaunches a lost worker
    (P.DOWN, PE.APPLY): P.PROVISIONING,
    (P.PROVISIONING, PE.APPLY): P.PROVISIONING,
    (P.READY, PE.APPLY): P.PROVISIONING,
    (P.FAILED, PE.APPLY): P.PROVISIONING,
    (P.PROVISIONING, PE.WORKERS_READY): P.READY,
    (P.READY, PE.WORKERS_READY): P.READY,
    (P.PROVISIONING, PE.WORKER_FAILED): P.FAILED,
    (P.READY, PE.WORKER_FAILED): P.FAILED,
    (P.PROVISIONING, PE.DOWN): P.SHUTTING_DOWN,
    (P.READY, PE.DOWN): P.SHUTTING_DOWN,
    (P.FAILED, PE.DOWN): P.SHUTTING_DOWN,
    (P.SHUTTING_DOWN, PE.GONE): P.DOWN,
}


@pytest.mark.parametrize(
    ("machine", "states", "events", "expected"),
    [
        (ClusterActor.machine, C, ClusterEvent, CLUSTER_EXPECTED),
        (JobActor.machine, J, JobEvent, JOB_EXPECTED),
        (ManagedJobActor.machine, M, MEvent, MANAGED_EXPECTED),
        (JobPoolActor.machine, P, PoolEvent, POOL_EXPECTED),
    ],
    ids=["cluster", "job", "managed_job", "job_pool"],
)
def test_every_state_event_pair(machine, states, events, expected) -> None:
    for state, event in itertools.product(states, events):
        if (state, event) in expected:
            assert machine.next(state, event) is expected[(state, event)], (state, event)
        else:
            with pytest.raises(TransitionError):
                machine.next(state, event)
    assert machine.table == expected


def test_a_stop_or_down_in_flight_is_only_left_by_its_answer_or_a_down() -> None:
    """No look at the infra moves an intent on: a restart finishes it instead."""
    for state in (C.STOPPING, C.TERMINATING):
        leaving = {e for (s, e) in ClusterActor.machine.table if s is state}
        assert not any(e.value.startswith("found_") for e in leaving), state
    assert C.STOPPING.shown == C.TERMINATING.shown == "INIT"
    assert C.AUTOSTOPPING.shown == "AUTOSTOPPING" and C.UP.shown == "UP"


def test_terminal_states_have_no_way_out_except_a_new_cluster() -> None:
    for machine in (JobActor.machine, ManagedJobActor.machine):
        for (state, event), _ in machine.table.items():
            assert not state.is_terminal, (state, event)
    leaving_terminated = [e for (s, e) in ClusterActor.machine.table if s is C.TERMINATED]
    assert leaving_terminated == [E.LAUNCH]


@pytest.mark.parametrize(
    ("ranks", "folded"),
    [
        ({0: J.RUNNING, 1: J.RUNNING}, J.RUNNING),
        ({0: J.RUNNING, 1: J.PENDING}, J.PENDING),
        ({0: J.SETTING_UP, 1: J.RUNNING}, J.SETTING_UP),
        ({0: J.SUCCEEDED, 1: J.RUNNING}, J.RUNNING),
        ({0: J.SUCCEEDED, 1: J.SUCCEEDED}, J.SUCCEEDED),
        ({0: J.RUNNING, 1: J.FAILED}, J.FAILED),
        ({0: J.CANCELLED, 1: J.FAILED}, J.FAILED),
        ({0: J.FAILED_SETUP, 1: J.SETTING_UP}, J.FAILED_SETUP),
        ({0: J.CANCELLED, 1: J.RUNNING}, J.CANCELLED),
    ],
)
def test_a_gang_folds_into_one_state(ranks, folded) -> None:
    assert fold(ranks) is folded
