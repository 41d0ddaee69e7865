"""Peak resident memory of this process while a block of code runs (for the benchmarks)."""

from __future__ import annotations

import threading
import time

import psutil


class RssSampler:
    """Highest RSS seen while active, sampled every `interval` seconds in a thread."""

    def __init__(self, interval: float = 0.001) -> None:
        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
