"Two CPU processes (torchrun, gloo) train with the walk under learn.distrib_ctx(): both must take the same walk."
import math, os, subprocess, sys
from pathlib import Path
import pytest, torch

root = Path(__file__).resolve().parent.parent
pytest.importorskip('accelerate')

@pytest.mark.parametrize('every', [1, 2])
def test_two_processes_take_the_same_walk_whenever_their_results_land(tmp_path, every):
    "Each walk's result reaches rank 1's host later than rank 0's, and iteration 2's loss is nan: same steps, bit for bit"
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(root / 'examples' / 'distributed_walk.py'), '--tiny', '--out', str(tmp_path),
           '--every', str(every), '--late-copies', '--nan-at', '2']
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    a, b = (torch.load(tmp_path / f'rank{r}.pt', weights_only=False) for r in (0, 1))
    assert len(a['history']['lr']) == 8 // every  # 2 epochs of 4 iterations per process (8 batches split in two)
    assert (a['blocked'], b['blocked']) == (0, 8 // every)  # rank 1's host waited for every walk's result, rank 0's never
    assert str(a['history']) == str(b['history'])  # same candidates, same averaged losses, same winners (nan included)
    assert a['history']['skipped'] == [i == 2 for i in a['history']['iter']]
    assert all(torch.equal(x, y) for x, y in zip(a['weights'], b['weights']))
    assert len(set(a['history']['lr'])) > 2  # and the walk really walked

def test_trials_add_no_buffer_broadcasts_to_ddp(tmp_path):
    "DDP broadcasts buffers before a forward that follows a training forward; trials leave buffers alone, so they broadcast none"
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from walkopt.core import losses_along
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/rendezvous', rank=0, world_size=1)
    try:
        model = DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)))
        broadcasts, sync = [], model._sync_buffers
        model._sync_buffers = lambda: broadcasts.append(1) or sync()
        params, x, y = list(model.parameters()), torch.randn(8, 4), torch.randn(8, 1)
        for _ in range(3):
            nn.functional.mse_loss(model(x), y).backward()
            origin = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p in params: p -= 1e-2 * p.grad; p.grad = None
            delta = [p.detach() - o for p, o in zip(params, origin)]
            losses_along(params, origin, delta, [0., .5, 1., 2.], lambda: nn.functional.mse_loss(model(x), y), model)
        assert len(broadcasts) == 3  # one before each training forward, as without trials (it was one per trial too)
    finally: dist.destroy_process_group()
