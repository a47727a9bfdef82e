"Two CPU processes (torchrun, gloo) train with the walk under learn.distrib_ctx(): both must take the same walk."
import os, subprocess, sys
from pathlib import Path
import pytest, torch

root = Path(__file__).resolve().parent.parent
pytest.importorskip('accelerate')

def test_two_processes_take_the_same_walk(tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(root / 'examples' / 'distributed_walk.py'), '--tiny', '--out', str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    a, b = (torch.load(tmp_path / f'rank{r}.pt', weights_only=False) for r in (0, 1))
    assert len(a['history']['lr']) == 8  # 2 epochs of 4 iterations per process (8 batches split in two)
    assert a['history'] == b['history']  # same candidates, same averaged losses, same winners
    assert all(torch.equal(x, y) for x, y in zip(a['weights'], b['weights']))
    assert len(set(a['history']['lr'])) > 2  # and the walk really walked
