"Render README.md from nbs/index.ipynb (nbdev_readme needs quarto, which cannot be installed offline)."
import json
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render(nb_path: Path) -> str:
    "Markdown cells as they are, code cells fenced as python; cells starting with `#| hide` left out"
    parts = []
    for cell in json.loads(nb_path.read_text(encoding='utf-8'))['cells']:
        src = ''.join(cell['source']).strip()
        if not src or src.startswith('#| hide'): continue
        parts.append(src if cell['cell_type'] == 'markdown' else f"```python\n{src}\n```")
    return '<!-- Rendered from nbs/index.ipynb by tools/readme.py (make sync): edit the notebook. -->\n\n' + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    (root / 'README.md').write_text(render(root / 'nbs' / 'index.ipynb'), encoding='utf-8')
