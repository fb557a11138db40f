"""Peak memory of one step: CUDA allocator statistics, or the resident set sampled on CPU."""
import ctypes
import gc
import os
import threading
import time

import torch


class PeakMemory:
    """Peak memory growth during a block, in ``peak_bytes`` after it: on CUDA
    ``torch.cuda.max_memory_allocated`` over the allocated memory before; on CPU the peak
    resident-set growth, sampled every millisecond after ``malloc_trim``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0

    @staticmethod
    def _rss() -> int:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

    def __enter__(self) -> 'PeakMemory':
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        try:  # give freed heap pages back so the baseline is the live memory
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except OSError:  # not glibc
            pass
        self._base = self._peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._peak, self._rss()) - self._base
