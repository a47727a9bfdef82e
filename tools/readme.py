"Render README.md from nbs/index.ipynb (nbdev_readme needs quarto, which cannot be installed offline)."
import json
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render(nb_path: Path) -> str:
    "Markdown cells as they are (image links made relative to the repo root), code cells fenced as python; `#| hide` cells left out"
    parts = []
    for cell in json.loads(nb_path.read_text(encoding='utf-8'))['cells']:
        src = ''.join(cell['source']).strip()
        if not src or src.startswith('#| hide'): continue
        if cell['cell_type'] == 'markdown': parts.append(src.replace('](images/', '](nbs/images/'))  # README sits one up
        else: parts.append(f"```python\n{src}\n```")
    return '<!-- Rendered from nbs/index.ipynb by tools/readme.py (make sync): edit the notebook. -->\n\n' + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    (root / 'README.md').write_text(render(root / 'nbs' / 'index.ipynb'), encoding='utf-8')
