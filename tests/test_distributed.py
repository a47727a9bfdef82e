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
