"""Run a function in N processes joined by a gloo process group (CPU parity tests).

The ranks are forked from a fork server (``multiprocessing``'s ``forkserver``): one process,
started at the first launch of a test process, that has imported what every rank imports
(torch, Lightning, NeMo, megatron-core, this library: seconds of CPU) and nothing else — no
process group, no megatron-core state, no test's state. Each rank is a fork of it, so a launch
costs no imports; a spawned interpreter would import everything again in every rank.
"""

from __future__ import annotations

import os
import socket

import torch.multiprocessing as mp

#: imported once by the fork server (a module that fails to import is skipped there and imported
#: by the rank that needs it)
PRELOAD = ["torch", "lightning.pytorch", "megatron.core", "nemo.core", "nemo.utils.exp_manager",
           "biomegatron_nemo.runs.schemas", "biomegatron_nemo.runs.registry", "biomegatron_nemo.runs.launch",
           "biomegatron_nemo.parallel", "biomegatron_nemo.parallel.trainer", "helpers.distributed", "helpers.models",
           "helpers.training", "helpers.parity"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reattach_output(parent: int) -> None:
    """Write to the launching process's current stdout/stderr (which pytest may have redirected
    since the fork server started), as a spawned rank would."""
    for fd in (1, 2):
        try:
            target = os.open(f"/proc/{parent}/fd/{fd}", os.O_WRONLY | os.O_APPEND)
        except OSError:
            continue
        os.dup2(target, fd)
        os.close(target)


def _entry(rank, world_size, port, fn, args, environ=None, parent=None):
    if environ is not None:  # the launching process's environment at launch time, as a spawned rank has it
        os.environ.clear()
        os.environ.update(environ)
    if parent is not None:
        _reattach_output(parent)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # two ranks share two cores
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(fn, world_size: int, *args) -> None:
    """Run ``world_size`` processes running ``fn(rank, world_size, *args)``.

    ``fn`` must be importable (module level). A failing rank's traceback is re-raised here.
    """
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # read when the server starts (the first launch)
    mp.start_processes(_entry, args=(world_size, _free_port(), fn, args, dict(os.environ), os.getpid()),
                       nprocs=world_size, join=True, start_method="forkserver")
