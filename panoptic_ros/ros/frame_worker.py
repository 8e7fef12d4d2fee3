"""Newest frame wins: one slot, one worker thread.

The executor thread only `put`s a frame (replacing a frame not yet started, which is
counted); the worker takes the newest and processes it. A camera faster than the network so
never builds a queue: latency stays one frame's processing time.
"""

import threading


class FrameWorker:
    """Runs process(item) on a worker thread for the newest item put; on_replaced() is
    called for every item replaced before it started."""

    def __init__(self, process, on_replaced, name='panoptic_worker'):
        self._process, self._on_replaced = process, on_replaced
        self._latest, self._running = None, True
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item):
        with self._cond:
            if self._latest is not None:
                self._on_replaced()
            self._latest = item
            self._cond.notify()

    def drop_pending(self):
        """Forget a frame not yet started (deactivation); returns whether there was one."""
        with self._cond:
            dropped, self._latest = self._latest is not None, None
        return dropped

    def stop(self, timeout=5.0):
        """Stop after the frame in flight, if any."""
        with self._cond:
            self._running = False
            self._cond.notify()
        self._thread.join(timeout=timeout)

    def _run(self):
        while True:
            with self._cond:
                while self._latest is None and self._running:
                    self._cond.wait(0.5)
                if not self._running:
                    return
                item, self._latest = self._latest, None
            if self._process(item) is False:   # the processor asked to stop
                return
