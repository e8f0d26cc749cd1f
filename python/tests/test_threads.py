"""Threads: the C error slot is per thread (src/core/error.c, _Thread_local), so two Python threads
that fail differently each get their own message; and ctypes releases the GIL during a C call, so
other Python threads run while a long computation does."""

import threading
import time
from ctypes import byref

import numpy as np

import flowvar
from flowvar import _lib


def test_error_slot_is_per_thread(reference):
    """Deterministic interleaving through the raw library: thread A fails, thread B then fails
    differently, and only then does each read its message: a shared slot would give A B's message."""
    singular = reference.problem(coupling="rotation", angle=170)
    t = float(flowvar.singular_times(singular)[0])
    valid = reference.problem()  # kept alive: the copy below points into its arrays
    bad = _lib.Problem.from_buffer_copy(valid._c)
    S1 = np.array([[2.0, 3.0], [3.0, 1.0]])  # symmetric, not positive definite
    bad.S1 = _lib.dptr(S1)
    both_failed, messages = threading.Barrier(2), {}

    def a():
        f, w = _lib.Field(), _lib.FieldWork()
        x, v = np.array([0.3, 0.2]), np.empty(2)
        _lib.ensure(_lib.lib.fv_field_build(byref(f), byref(singular._c), _lib.FIELDS["rotation"]))
        _lib.ensure(_lib.lib.fv_field_work_alloc(byref(w), 2, 1))
        status = _lib.lib.fv_field_eval(byref(f), t, 1, _lib.dptr(x), _lib.dptr(v), byref(w))
        both_failed.wait()  # B fails now
        both_failed.wait()
        messages["a"] = (status, _lib.last_error())
        _lib.lib.fv_field_work_free(byref(w))
        _lib.lib.fv_field_free(byref(f))

    def b():
        both_failed.wait()  # A has failed
        status = _lib.lib.fv_problem_validate(byref(bad))
        both_failed.wait()
        messages["b"] = (status, _lib.last_error())

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert messages["a"][0] == flowvar.errors.FV_ESINGULAR, "thread A's call failed as singular"
    assert messages["a"][1].startswith("rotation field is singular at t"), "thread A reads its own message"
    assert messages["b"][0] == flowvar.errors.FV_EINPUT, "thread B's call failed as bad input"
    assert "--target-cov" in messages["b"][1], "thread B reads its own message"


def test_two_threads_of_mixed_calls_get_their_own_errors(reference):
    """Through the public API: many failing and succeeding calls in two threads at once."""
    singular = reference.problem(coupling="rotation", angle=170)
    t = float(flowvar.singular_times(singular)[0])
    ok = reference.problem(coupling="rotation", angle=120, sigma=0.2)
    want = flowvar.variance(ok, "ot", t_grid=3)["var_total"]
    failures = []

    def singular_calls():
        for _ in range(200):
            try:
                flowvar.field(singular, "rotation", [0.3, 0.2], t)
                failures.append("A: no SingularError")
            except flowvar.SingularError as e:
                if not e.message.startswith("rotation field is singular"):
                    failures.append("A got: " + e.message)
            flowvar.field(singular, "ot", [0.3, 0.2], t)

    def input_calls():
        for _ in range(200):
            try:
                flowvar.Problem([1, -0.5], [2, 3, 3, 1])
                failures.append("B: no InputError")
            except flowvar.InputError as e:
                if "--target-cov" not in e.message:
                    failures.append("B got: " + e.message)
            if not np.array_equal(flowvar.variance(ok, "ot", t_grid=3)["var_total"], want):
                failures.append("B: a successful call changed its result")

    threads = [threading.Thread(target=singular_calls), threading.Thread(target=input_calls)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == [], "each thread saw only its own errors and results"


def test_long_calls_release_the_gil(random7):
    """While one thread is inside a long C call, the main thread keeps running Python."""
    p = random7.problem()
    X = np.random.default_rng(0).standard_normal((20000, p.d))
    started = threading.Event()

    def long_call():
        started.set()
        flowvar.transport(p, "ot", X, solver="rk4", steps=100)

    th = threading.Thread(target=long_call)
    begin = time.perf_counter()
    th.start()
    started.wait()
    ticks = 0
    while th.is_alive():
        ticks += 1
        time.sleep(0.005)
    elapsed = time.perf_counter() - begin
    assert elapsed > 0.1, f"the call is long enough to tell ({elapsed:.3f} s)"
    assert ticks >= 10, f"the main thread ran {ticks} times during a {elapsed:.2f} s call"
