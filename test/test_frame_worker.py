"""The node's frame worker (panoptic_ros.ros.frame_worker): newest frame wins, two stages.

Verifies, with plain threads and events (no timing): with overlap the second stage of frame
t runs while the first stage of frame t + 1 runs (it waits for that start, which would hang
a sequential worker); under a burst of frames every frame is either finished or counted as
replaced, finished frames come out in the order they were put, and nothing is lost between
the stages; without overlap both stages run on one thread in order; STOP from the second
stage stops the worker; a first stage with nothing to finish skips the second; gather holds
a cycle until every expected camera's frame is in (and runs them in one call), does not wait
for a camera left out of the expected ones, and goes after its bound when one never comes. Does not
verify the node around it (test_panoptic_node, test_reliability) nor the speed
(benchmarks/bench_ros.py).
"""

import threading

import pytest

from panoptic_ros.ros.frame_worker import FrameWorker

pytestmark = pytest.mark.pure
WAIT = 30.0   # seconds: only reached when the behaviour is wrong


def one_camera(first):
    """A first stage of one camera's frame (items put without a key)."""
    return lambda items: first(items[None])


def test_second_stage_overlaps_the_next_first_stage():
    second_started, first_of_next, both_done = (threading.Event() for _ in range(3))
    done = []

    def first(item):
        if item == 2:
            assert second_started.wait(WAIT)   # frame 1 is in its second stage meanwhile
            first_of_next.set()
        return item

    def second(item):
        if item == 1:
            second_started.set()
            assert first_of_next.wait(WAIT), 'the next first stage never ran beside this one'
        done.append(item)
        if item == 2:
            both_done.set()

    worker = FrameWorker(one_camera(first), lambda key: None, second, overlap=True)
    worker.put(1)
    assert second_started.wait(WAIT)
    worker.put(2)
    assert both_done.wait(WAIT)
    worker.stop(timeout=WAIT)
    assert done == [1, 2]


@pytest.mark.parametrize('overlap', [True, False])
def test_every_frame_is_finished_in_order_or_counted_as_replaced(overlap):
    replaced, finished, threads = [], [], set()
    began, gate, last = threading.Event(), threading.Event(), threading.Event()

    def first(item):
        if item == 0:
            began.set()
            assert gate.wait(WAIT)   # hold the first frame while a burst arrives
        threads.add(('first', threading.get_ident()))
        return item

    def second(item):
        threads.add(('second', threading.get_ident()))
        finished.append(item)
        if item == 200:
            last.set()

    worker = FrameWorker(one_camera(first), lambda key: replaced.append(key), second,
                         overlap=overlap)
    worker.put(0)
    assert began.wait(WAIT)
    for item in range(1, 200):
        worker.put(item)
    gate.set()
    worker.put(200)
    assert last.wait(WAIT)
    worker.stop(timeout=WAIT)
    assert finished == sorted(finished) and finished[0] == 0 and finished[-1] == 200
    assert len(finished) + len(replaced) == 201
    first_threads = {t for stage, t in threads if stage == 'first'}
    second_threads = {t for stage, t in threads if stage == 'second'}
    assert (first_threads == second_threads) is not overlap


@pytest.mark.parametrize('overlap', [True, False])
def test_stop_from_a_stage_stops_the_worker(overlap):
    seen = []
    worker = FrameWorker(one_camera(lambda item: item),
                         lambda key: None,
                         lambda item: (seen.append(item), FrameWorker.STOP)[1], overlap)
    worker.put(1)
    worker._threads[-1].join(WAIT)
    assert seen == [1] and not worker._threads[-1].is_alive()
    worker.stop(timeout=WAIT)


def test_nothing_to_finish_skips_the_second_stage():
    finished, through = [], threading.Semaphore(0)

    def first(item):
        if item % 2:
            through.release()   # this frame ends here
            return None
        return item

    def second(item):
        finished.append(item)
        through.release()

    worker = FrameWorker(one_camera(first), lambda key: None, second, overlap=True)
    for item in range(6):
        worker.put(item)
        assert through.acquire(timeout=WAIT)   # one at a time: none replaced
    worker.stop(timeout=WAIT)
    assert finished == [0, 2, 4]


@pytest.mark.parametrize('overlap', [True, False])
def test_cameras_each_keep_their_newest_frame_and_a_silent_one_blocks_nobody(overlap):
    """Each cycle takes the newest frame of every camera that has one: frames replaced are
    counted per camera; after camera 'b' falls silent, cycles go on with 'a' alone."""
    cycles, replaced = [], []
    began, gate, done = threading.Event(), threading.Event(), threading.Event()

    def first(items):
        if not cycles and not began.is_set():
            began.set()
            assert gate.wait(WAIT)   # hold the first cycle while both cameras send
        return dict(items)

    def second(items):
        cycles.append(items)
        if items.get('a') == 'a9':
            done.set()

    worker = FrameWorker(first, replaced.append, second, overlap=overlap)
    worker.put('a0', 'a')
    assert began.wait(WAIT)
    for k in range(1, 4):
        worker.put(f'a{k}', 'a')
        worker.put(f'b{k}', 'b')
    gate.set()
    while not len(cycles) >= 2:   # the held cycle, then one with both cameras' newest
        threading.Event().wait(0.01)
    for k in range(4, 10):        # 'b' is silent now
        worker.put(f'a{k}', 'a')
    assert done.wait(WAIT)
    worker.stop(timeout=WAIT)
    assert cycles[0] == {'a': 'a0'} and cycles[1] == {'a': 'a3', 'b': 'b3'}
    assert replaced.count('b') == 2 and replaced.count('a') >= 2
    assert all(set(c) == {'a'} for c in cycles[2:])
    seen_a = [c['a'] for c in cycles]
    assert len(seen_a) + replaced.count('a') == 10


def test_gather_waits_for_every_expected_camera_then_runs_them_together():
    calls, done = [], threading.Event()

    def first(items):
        calls.append(sorted(items))
        done.set()

    expected = ['a', 'b', 'c']
    worker = FrameWorker(first, lambda key: None, gather=(WAIT, lambda: expected))
    worker.put(1, 'a')   # the worker wakes here and must wait for b and c
    threading.Event().wait(0.05)   # (the wait must hold whether or not the worker woke yet)
    worker.put(2, 'b')
    assert not done.is_set()
    worker.put(3, 'c')
    assert done.wait(WAIT)
    worker.stop(timeout=WAIT)
    assert calls == [['a', 'b', 'c']]


def test_gather_does_not_wait_for_a_camera_left_out_nor_past_its_bound():
    calls, done = [], threading.Event()

    def first(items):
        calls.append(sorted(items))
        done.set()

    worker = FrameWorker(first, lambda key: None, gather=(WAIT, lambda: ['a']))
    worker.put(1, 'a')   # b is not expected (stopped sending): no wait
    assert done.wait(WAIT)
    worker.stop(timeout=WAIT)
    done.clear()
    bounded = FrameWorker(first, lambda key: None, gather=(0.01, lambda: ['a', 'b']))
    bounded.put(1, 'a')   # b never comes: the cycle goes after the bound
    assert done.wait(WAIT)
    bounded.stop(timeout=WAIT)
    assert calls == [['a'], ['a']]
