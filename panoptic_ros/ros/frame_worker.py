"""Newest frame wins: one input slot per camera, a worker thread, and optionally a second
stage beside it.

The executor thread only `put`s a frame under its camera's key (replacing that camera's frame
not yet started, which is counted); the worker takes the newest frame of every camera that
has one, all at once, and runs `first` on them ({key: frame}: one batched network call per
cycle). A camera faster than the network so never builds a queue: latency stays one cycle's
processing time, and a camera that stops sending does not hold the others back.

With `gather` = (seconds, expected): once a cycle's first frame is in, the worker waits up to
that long for a frame under every key of expected() (the cameras that are sending), so that
cameras triggered together go through the network together however the threads are
scheduled; a late camera delays the cycle by at most `seconds`, a stopped one not at all
once expected() leaves it out.

`first` returns what `second` finishes (None: nothing to finish; FrameWorker.STOP: stop).
With `overlap`, `second` runs on a thread of its own, so that the first stage of frame t + 1
(the network) runs while the second stage of frame t (head, occupancy, publishing) finishes:
one hand-over slot between them, and the first stage takes a new frame only once the slot
is empty, so frames finish in the order they started, nothing is dropped between the stages
(a slow second stage makes the input slot drop instead) and at most three frames are past
the input slot (one in each stage, one handed over). Without `overlap`, `second` runs right
after `first` on the worker thread.
"""

import threading
import time


class _Slot:
    """One item between two threads; put waits while it is full (unless closed)."""

    def __init__(self):
        self._item, self._open = None, True
        self._cond = threading.Condition()

    def put(self, item):
        with self._cond:
            self.wait_empty()
            self._item = item
            self._cond.notify_all()

    def wait_empty(self):
        with self._cond:
            while self._item is not None and self._open:
                self._cond.wait(0.5)

    def take(self):
        """The next item, or None once closed and empty."""
        with self._cond:
            while self._item is None and self._open:
                self._cond.wait(0.5)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self):
        with self._cond:
            self._open = False
            self._cond.notify_all()


class FrameWorker:
    """Runs first({key: item}) on a worker thread for the newest item put under each key,
    then second(result); on_replaced(key) is called for every item replaced before it
    started."""

    STOP = object()

    def __init__(self, first, on_replaced, second=None, overlap=False,
                 name='panoptic_worker', gather=(0.0, None)):
        self._first, self._second, self._on_replaced = first, second, on_replaced
        self._gather, self._expected = gather
        self._latest, self._running = {}, True
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._run, name=name, daemon=True)]
        self._handover = _Slot() if overlap and second is not None else None
        if self._handover is not None:
            self._threads.append(threading.Thread(target=self._run_second,
                                                  name=f'{name}_second', daemon=True))
        for thread in self._threads:
            thread.start()

    def put(self, item, key=None):
        with self._cond:
            if key in self._latest:
                self._on_replaced(key)
            self._latest[key] = item
            self._cond.notify()

    def drop_pending(self):
        """Forget the frames not yet started (deactivation); returns how many there were."""
        with self._cond:
            dropped, self._latest = len(self._latest), {}
        return dropped

    def stop(self, timeout=5.0):
        """Stop after the frames in flight, if any."""
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._handover is not None:   # the second stage finishes what it holds
            self._handover.close()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _run(self):
        while True:
            if self._handover is not None:   # start a frame only once the last one is handed
                self._handover.wait_empty()  # over: the newest frame, and at most 3 in flight
            with self._cond:
                while not self._latest and self._running:
                    self._cond.wait(0.5)
                self._wait_for_expected()
                if not self._running:
                    return
                item, self._latest = self._latest, {}
            result = self._first(item)
            if result is self.STOP:   # the processor asked to stop
                return
            if result is None or self._second is None:
                continue
            if self._handover is not None:
                self._handover.put(result)
            elif self._second(result) is self.STOP:
                return

    def _wait_for_expected(self):
        """(Holding the lock, a frame pending) the other expected keys' frames, bounded."""
        if self._gather <= 0 or self._expected is None or not self._running:
            return
        deadline = time.monotonic() + self._gather
        while self._running and not set(self._expected()) <= set(self._latest):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _run_second(self):
        while True:
            result = self._handover.take()
            if result is None or self._second(result) is self.STOP:
                return
