"The wheel as a user installs it: into a fresh venv that already has fastai, with no repo on the path"
import json, shutil, subprocess, sys, sysconfig
from pathlib import Path
import fastai, torch

REPO = Path(__file__).resolve().parent.parent

def run(*args, **kwargs) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout

def test_wheel_installs_beside_an_existing_fastai_and_trains(tmp_path):
    src = tmp_path / 'src'  # built from a copy: setuptools leaves build/ behind where it builds
    shutil.copytree(REPO / 'walkopt', src / 'walkopt', ignore=shutil.ignore_patterns('__pycache__'))
    for name in ('setup.py', 'settings.ini', 'pyproject.toml', 'README.md'): shutil.copy(REPO / name, src)
    run(sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path), str(src))
    wheel, = tmp_path.glob('walkopt-*.whl')
    env = tmp_path / 'env'
    run(sys._base_executable, '-m', 'venv', str(env))
    python = str(env / 'bin' / 'python')
    own = Path(run(python, '-c', "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    run(python, '-m', 'pip', 'uninstall', '-y', '-q', 'setuptools')  # venv's own old copy (Python < 3.12) would shadow the user's
    (own / 'existing.pth').write_text(sysconfig.get_paths()['purelib'])  # the user's fastai, torch, ... already there
    run(python, '-m', 'pip', 'install', '--no-index', '-q', str(wheel))
    installed = sorted(p.name.split('-')[0] for p in own.glob('*.dist-info'))
    assert installed == ['pip', 'walkopt'], installed  # nothing the user had was replaced or added
    probe = """
import json, walkopt, fastai, torch
from fastai.callback.progress import ProgressCallback
from walkopt.all import *
learn = synthetic_learner(seed=0)
with learn.no_bar(), learn.no_logging(): learn.fit_walk(1, 1e-3)
fig = learn.walk.plot()
print(json.dumps(dict(walkopt=walkopt.__file__, fastai=fastai.__version__, torch=torch.__version__,
                      walks=len(learn.walk.history), axes=len(fig.axes))))
"""
    seen = json.loads(run(python, '-c', probe, cwd=tmp_path).strip().splitlines()[-1])
    assert seen['walkopt'].startswith(str(own)) and seen['walks'] > 0 and seen['axes'] >= 1
    assert (seen['fastai'], seen['torch']) == (fastai.__version__, torch.__version__)
