"""Share a CPU batch among helper threads, in shards of whole blocks, one torch thread each.

    from lib.train.pixmix_shards import run_in_shards
    def work(first_block, last_block):       # handles blocks first_block .. last_block - 1
        ...
        return result
    results = run_in_shards(work, n_blocks, n_samples, x.device)   # one result per shard, in order

Off the CPU, with one torch thread, or for fewer than 2 MIN_SHARD samples, `work` runs
once, on the calling thread, over all blocks (and not at all without blocks). Otherwise
the blocks are cut into min(torch threads, n_samples // MIN_SHARD, n_blocks) shards of
consecutive blocks, each run on a thread of a process-wide pool whose threads run torch
on one thread each. The caller waits for every shard, also when one fails, and a failure
is raised after all have stopped.

Why: PixMix of a CPU batch is hundreds of mid-sized torch ops; torch's own threads
inside each op leave the cores idle at every op's start and end, while whole shards on
their own threads keep them busy (torch and numpy release the interpreter lock inside
their kernels). The results cannot depend on the number of shards as long as `work`
draws its random numbers per block, as lib.train.pixmix does.
"""
import concurrent.futures
import os
import sys

import torch

# samples per shard below which another thread costs more than it saves (a shard has
# about 1 ms of fixed cost; one core mixes 1,024 pictures in about 5 ms)
MIN_SHARD = 1024
# Python's switch interval while shards run. Every torch call drops the interpreter lock
# and takes it back; a shard back from a long kernel can find the other shard making
# short calls, taking the lock back each time before the waiting thread wakes, until the
# interval runs out (5 ms by default). 0.2 ms bounds that wait: 1-5% faster on two cores
# (benchmarks/RESULTS.md, the entry on the switch interval).
SWITCH_INTERVAL_S = 0.0002

_pool = None


def shard_count(n_blocks, n_samples, device):
    """How many shards run_in_shards cuts n_blocks blocks of n_samples samples into (0 or 1: none)."""
    if torch.device(device).type != "cpu":
        return 1  # a GPU runs each op's elements in parallel itself
    return min(torch.get_num_threads(), n_samples // MIN_SHARD, n_blocks)


def run_in_shards(work, n_blocks, n_samples, device):
    """[work(first_block, last_block) for each shard], the shards covering range(n_blocks) in order."""
    shards = shard_count(n_blocks, n_samples, device)
    if shards <= 1:
        return [work(0, n_blocks)] if n_blocks else []
    bounds = [(n_blocks * i // shards, n_blocks * (i + 1) // shards) for i in range(shards)]
    # The calling thread does no torch work meanwhile: its own torch threads would
    # spin-wait for more work on the cores the shards need.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
    try:
        pending = [_helper_threads(shards).submit(work, first, last) for first, last in bounds]
        # wait for every shard, also when one fails, so that no thread is left writing
        concurrent.futures.wait(pending)
    finally:
        sys.setswitchinterval(switch_interval)
    return [done.result() for done in pending]


def _helper_threads(count):
    """The process-wide pool of `count` Python threads whose torch ops run on one thread."""
    global _pool
    if _pool is None or _pool._max_workers != count:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix="pixmix",
                                                      initializer=_one_torch_thread)
    return _pool


def _one_torch_thread():
    torch.get_num_threads()  # torch sets a new thread's count on first use: let it happen first
    torch.set_num_threads(1)


def _forget_helper_threads():
    # a forked child has the pool object but none of its threads: it must make its own
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_helper_threads)
