"Notebooks as users run them: in a fresh Jupyter kernel, every figure a cell shows arrives as an image"
from pathlib import Path
import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')
NBS = Path(__file__).resolve().parent.parent / 'nbs'

@pytest.mark.parametrize('name', ['04_plot', '10_lesson_surfaces', '11_lesson_mnist1d'])
def test_figures_show_as_images_in_a_fresh_kernel(name):
    nb = nbformat.read(NBS / f'{name}.ipynb', as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(NBS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if 'data' in o]
    figures = [o for o in outputs if o.data.get('text/plain', '').startswith(('<Figure size', '<matplotlib.figure.Figure'))]
    assert figures, f"{name} shows no figure"
    assert all('image/png' in o.data for o in figures), [o.data['text/plain'] for o in figures if 'image/png' not in o.data]
