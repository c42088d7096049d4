"""`sessiond dev`'s restart schedule: backoff, reset after a stable run, one crash-loop report."""

from __future__ import annotations

from infra.supervise import RestartPolicy, describe_exit


def test_delays_double_up_to_the_cap() -> None:
    policy = RestartPolicy(first=0.5, cap=4.0, stable_s=30, loop_exits=100)
    delays = [policy.exited(now=float(i), ran_s=1.0).delay for i in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_process_that_stayed_up_starts_from_the_first_delay_again() -> None:
    policy = RestartPolicy(first=0.5, cap=8.0, stable_s=30)
    for i in range(3):
        policy.exited(now=float(i), ran_s=1.0)
    assert policy.exited(now=100.0, ran_s=45.0).delay == 0.5


def test_a_crash_loop_is_reported_once_then_again_only_after_a_stable_run() -> None:
    policy = RestartPolicy(first=0.1, cap=1.0, stable_s=30, loop_exits=3, loop_window_s=60)
    verdicts = [policy.exited(now=float(i), ran_s=0.5) for i in range(6)]
    assert [v.crash_loop for v in verdicts] == [False, False, True, False, False, False]
    assert verdicts[2].exits == 3
    policy.exited(now=200.0, ran_s=120.0)  # it stayed up: the loop is over
    again = [policy.exited(now=201.0 + i, ran_s=0.5) for i in range(3)]
    assert [v.crash_loop for v in again] == [False, True, False]


def test_exits_outside_the_window_are_not_a_loop() -> None:
    policy = RestartPolicy(loop_exits=3, loop_window_s=10, stable_s=1000)
    verdicts = [policy.exited(now=i * 20.0, ran_s=5.0) for i in range(5)]
    assert not any(v.crash_loop for v in verdicts)


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(2) == "exited with code 2"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-15) == "killed by SIGTERM"
