"""Train the MNIST-1D CNN with the walk on several processes, under fastai's `learn.distrib_ctx()`.

    torchrun --nproc_per_node 2 examples/distributed_walk.py            # or: accelerate launch examples/...
    torchrun --nproc_per_node 2 examples/distributed_walk.py --tiny --out DIR   # what tests/test_distributed.py runs

Each process trains on its shard of every batch; DDP averages the gradients and the walk averages its candidates'
losses (one all-reduce of 10 floats per walk), so every process takes the same step. On a machine without GPUs it
runs on the CPU with gloo; with `--out` each rank saves its walk history and weights there. `--late-copies` makes each
walk's result reach the host late, later on higher ranks (a test double of a busy GPU), and `--nan-at` makes the loss
nan at the given iterations: every process must still take the same steps, bit for bit.
"""
import argparse
from functools import partial
from pathlib import Path
import torch, torch.distributed as dist
from fastai.callback.progress import ProgressCallback  # patches Learner.no_bar
from fastai.distributed import DistributedDL, rank_distrib
from fastai.torch_core import default_device
from walkopt.callback import WalkCallback
from walkopt.data import mnist1d_learner
from walkopt.test_utils import tiny_learner, nan_loss_at, LateHostCopy

def broadcast_on_cpu(self, t, rank):
    "fastai 2.8's DistributedDL broadcasts its batch order on CUDA (for nccl); gloo on the CPU takes CPU tensors"
    t = torch.LongTensor(t)
    dist.broadcast(t, rank)
    return t.tolist()

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--lr', type=float, default=1e-4)
    p.add_argument('--every', type=int, default=1, help="walk every this many iterations")
    p.add_argument('--tiny', action='store_true', help='a tiny regression model instead of the MNIST-1D CNN')
    p.add_argument('--late-copies', action='store_true', help="each walk's result lands 2*rank checks late (a test double)")
    p.add_argument('--nan-at', type=int, nargs='*', default=[], help='iterations whose training loss is nan (--tiny only)')
    p.add_argument('--out', type=Path, help="folder for each rank's history and weights")
    a = p.parse_args()
    on_cpu = not torch.cuda.is_available()
    if on_cpu: DistributedDL._broadcast = broadcast_on_cpu
    if a.tiny: learn = nan_loss_at(tiny_learner(lr=a.lr, n_train=8, bs=32, device='cpu' if on_cpu else default_device()), a.nan_at)
    else: learn = mnist1d_learner(a.lr, seed=0)  # seeded alike on every process (DDP also starts all from rank 0's weights)
    walk = WalkCallback(every=a.every)
    if a.late_copies: walk.host_copy = partial(LateHostCopy, lag=2 * rank_distrib())
    learn.add_cb(walk)
    # SyncBatchNorm needs GPUs; on the CPU BatchNorm buffers are broadcast from rank 0 at each forward instead
    with learn.distrib_ctx(sync_bn=not on_cpu, cpu=on_cpu), learn.no_bar():
        learn.fit(a.epochs)
    if a.out:
        torch.save(dict(history=learn.walk.history.to_dict('list'), blocked=walk.result_copy.blocked,
                        weights=[w.detach().cpu() for w in learn.model.parameters()]), a.out / f'rank{rank_distrib()}.pt')
