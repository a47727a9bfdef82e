"Every notebook in nbs/ runs as a test (nbdev_test), so pytest counts and reports it."
import subprocess, sys
from pathlib import Path
import pytest, torch

nbs = sorted(Path(__file__).resolve().parent.parent.joinpath('nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', nbs, ids=[nb.stem for nb in nbs])
def test_notebook(nb):
    nbdev_test = Path(sys.executable).with_name('nbdev_test')
    flags = ['--flags', 'gpu'] if torch.cuda.is_available() else []  # cells marked `#| gpu` run only on a GPU
    res = subprocess.run([str(nbdev_test), '--path', str(nb), '--do_print', *flags], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
