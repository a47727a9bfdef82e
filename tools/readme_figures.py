"Draw the README's pictures from a real MNIST-1D run with the walk (10 epochs from lr=1e-5): nbs/images/*.png"
from pathlib import Path
from fastai.callback.progress import ProgressCallback  # patches Learner.no_bar
from walkopt.all import *

out = Path(__file__).resolve().parent.parent / 'nbs' / 'images'

if __name__ == '__main__':
    learn = mnist1d_learner(1e-5, cbs=WalkCallback(), seed=0)
    with learn.no_bar(), learn.no_logging(): learn.fit(10)
    h = learn.walk.history
    learn.walk.plot().savefig(out / 'walk_mnist1d.png', dpi=90)
    learn.walk.plot_iter(int(h['iter'].iloc[len(h) // 2])).savefig(out / 'walk_iter_mnist1d.png', dpi=90)
    learn.walk.plot_winners().savefig(out / 'walk_winners_mnist1d.png', dpi=90)
    # the facts the README's text about these pictures quotes
    won = [r.lrs.index(r.lr) for r in h.itertuples()]
    print(f"past 1e-3 at iteration {int((h['lr'] > 1e-3).idxmax())}; epoch medians of the walked lr:",
          ' '.join(f'{m:.2g}' for m in h.groupby('epoch')['lr'].median()))
    with learn.no_bar(): accuracy = float(learn.validate()[1])
    print(f"stayed put {sum(w == 0 for w in won) / len(won):.0%}, at the grid's edges "
          f"{sum(w in (1, len(h['lrs'].iloc[0]) - 1) for w in won) / len(won):.0%}; final accuracy {accuracy:.1%}")
