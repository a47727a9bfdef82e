"""`make bench`: what the walk costs over plain fastai training, as ratios measured in one run.

Trains three models on synthetic inputs for one epoch each way, interleaved (plain; walk with its defaults, the
trial loop; walk with `vmap`ped trials; walk with `trials='auto'`, the `path` column saying what it chose; walk
judged on a quarter of the batch; walk every 4th step; `fit_walk` (walks the first 30%); plain, ...), and prints the
median ratios of epoch time and peak memory against plain training, with the device named, and how long the host
waited for the walks' results (`wait_ms`, per walk; the GPU need not wait with it: see `HostCopy`). Peak memory is CUDA's `max_memory_allocated` on
a GPU; on a CPU, the bytes of the weights, gradients and optimizer state plus the peak of what the epoch allocated on
top, from the torch profiler (an extra, untimed epoch). On a GPU the sizes are the ones of issue 6 (MNIST-1D CNN at
batch 512, ResNet-18 on 32x32 at batch 256, a 4-layer transformer, d=256, at batch 64 x 128 tokens); on a CPU they
are cut down so it runs in a few minutes.

    python benchmarks/bench.py [--reps 3] [--batches N] [--out results.csv]
"""
import argparse, itertools, statistics, time
import pandas as pd, torch
from torch import nn
from fastai.basics import Learner, CrossEntropyLossFlat, Adam
from fastai.callback.progress import ProgressCallback  # patches Learner.no_bar
from walkopt.callback import WalkCallback
from walkopt.data import tensor_dls, mnist1d_cnn
from walkopt.test_utils import allocations

class TokenClassifier(nn.Module):
    "Embedding, a transformer encoder, mean pooling, a linear head"
    def __init__(self, vocab=1000, d=256, layers=4, heads=4, n_out=10):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, heads, 4 * d, batch_first=True), layers)
        self.head = nn.Linear(d, n_out)
    def forward(self, x): return self.head(self.enc(self.emb(x)).mean(1))

def resnet18():
    from torchvision.models import resnet18
    return resnet18(num_classes=10)

def models(gpu):
    "name -> (model factory, input maker(n), batch size)"
    s = 1 if gpu else 8  # CPU: smaller batches and sequences
    return {
        'MNIST-1D CNN': (mnist1d_cnn, lambda n: torch.randn(n, 40), 512 // s),
        'ResNet-18 32x32': (resnet18, lambda n: torch.randn(n, 3, 32, 32), 256 // s),
        'Transformer d=256 x4': (TokenClassifier, lambda n: torch.randint(0, 1000, (n, 128 // s)), 64 // s),
    }

ARMS = {'plain': ('fit', None), 'walk': ('fit', lambda bs: {}), 'walk vmap': ('fit', lambda bs: dict(trials='vmap')),
        'walk auto': ('fit', lambda bs: dict(trials='auto')),
        'walk on 1/4 batch': ('fit', lambda bs: dict(trial_size=max(1, bs // 4))),
        'walk every 4': ('fit', lambda bs: dict(every=4)), 'fit_walk': ('fit_walk', lambda bs: {})}
"How each arm trains, and its `WalkCallback` options from the batch size (`None`: plain training)"

def resident_bytes(learn) -> int:
    "Bytes of what lives between iterations: weights, gradients, optimizer state"
    tensors = [t for p in learn.model.parameters() for t in (p, p.grad) if t is not None]
    state = getattr(learn.opt, 'opt', learn.opt).state
    tensors += [v for s in state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)

def cpu_peak_bytes(fit) -> int:
    "Peak bytes allocated on top of what was there, while `fit()` runs"
    return max(itertools.accumulate(allocations(fit), initial=0))

def one_epoch(make_model, make_x, bs, batches, arm, device):
    "Seconds, peak memory (bytes), trial path and the host's wait per walk (ms) of one fastai epoch (no validation) with `arm`"
    torch.manual_seed(0)
    x, y = make_x(bs * batches), torch.randint(0, 10, (bs * batches,))
    dls = tensor_dls(x, y, x[:bs], y[:bs], bs=bs, device=device)
    method, options = ARMS[arm]
    cbs = [WalkCallback(**options(bs))] if options is not None else []
    learn = Learner(dls, make_model(), loss_func=CrossEntropyLossFlat(), opt_func=Adam, lr=1e-3, cbs=cbs)
    fit = lambda: getattr(learn, method)(1)
    with learn.no_bar(), learn.no_logging():
        fit()  # warm-up: kernels, allocator, cuDNN choices, `trials='auto'`'s timing
        if device.type == 'cuda': torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        fit()
        if device.type == 'cuda': torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        copy = learn.walk.result_copy if options is not None else None
        wait_ms = 1e3 * copy.waited / max(len(learn.walk.history), 1) if copy is not None else float('nan')
        peak = torch.cuda.max_memory_allocated() if device.type == 'cuda' else resident_bytes(learn) + cpu_peak_bytes(fit)
    return seconds, peak, learn.walk.trial_path if options is not None else '', wait_ms

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--batches', type=int, default=None, help='batches per epoch (default: 50 on a GPU, 4 on a CPU)')
    p.add_argument('--out', default=None, help='also write the raw timings to this CSV')
    a = p.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.device('cuda' if gpu else 'cpu')
    batches = a.batches or (50 if gpu else 4)
    name = torch.cuda.get_device_name() if gpu else 'CPU'
    print(f"walkopt bench on {name}, torch {torch.__version__}, {batches} batches per epoch, {a.reps} interleaved reps")
    rows = []
    for model, (make_model, make_x, bs) in models(gpu).items():
        for rep in range(a.reps):
            for arm in ARMS:
                sec, mem, path, wait_ms = one_epoch(make_model, make_x, bs, batches, arm, device)
                rows.append(dict(model=model, batch=bs, rep=rep, arm=arm, path=path, seconds=sec, peak_bytes=mem, wait_ms=wait_ms))
    df = pd.DataFrame(rows)
    if a.out: df.to_csv(a.out, index=False)
    plain = df[df.arm == 'plain'].set_index(['model', 'rep'])
    table = []
    for (model, arm), g in df[df.arm != 'plain'].groupby(['model', 'arm'], sort=False):
        g = g.set_index(['model', 'rep'])
        table.append(dict(model=model, batch=int(g['batch'].iloc[0]), arm=arm, path='/'.join(sorted(set(g['path']))),
                          time_ratio=statistics.median(g['seconds'] / plain['seconds'].loc[g.index]),
                          memory_ratio=statistics.median(g['peak_bytes'] / plain['peak_bytes'].loc[g.index]),
                          wait_ms=statistics.median(g['wait_ms']),
                          plain_seconds=statistics.median(plain['seconds'].loc[g.index]),
                          plain_mb=statistics.median(plain['peak_bytes'].loc[g.index]) / 2**20))
    print(pd.DataFrame(table).to_string(index=False, float_format=lambda v: f'{v:.2f}'))

if __name__ == '__main__': main()
