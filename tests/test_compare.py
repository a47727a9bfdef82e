"walkopt-compare from the command line (as users run it) and compare() on a user's own learner."
import signal, subprocess, sys, time
from pathlib import Path
import pandas as pd, pytest
from walkopt.compare import compare, summarize
from walkopt.test_utils import tiny_learner

CLI = str(Path(sys.executable).with_name('walkopt-compare'))

def cli(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=600)

def test_cli_writes_table_csv_report_and_pictures(tmp_path):
    res = cli('--dataset', 'synthetic', '--epochs', '2', '--lrs', '1e-3,1e-1', '--methods', 'fit,walk', '--out', str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert '| walk | 1e-03 |' in res.stdout and '| fit | 1e-01 |' in res.stdout
    assert {p.name for p in tmp_path.iterdir()} == {'results.csv', 'report.md', 'final_vs_lr.png', 'loss_vs_time.png', 'settings.json'}
    df = pd.read_csv(tmp_path / 'results.csv')
    assert len(df) == 2 * 2 * 2  # methods x lrs x epochs
    assert set(df.columns) >= {'method', 'start_lr', 'seed', 'epoch', 'train_loss', 'valid_loss', 'metric', 'wall_seconds'}
    assert '![Final accuracy by starting lr](final_vs_lr.png)' in (tmp_path / 'report.md').read_text()
    walked = df[df['method'] == 'walk'].drop_duplicates('start_lr')
    assert (walked['lr'] != walked['start_lr']).all()  # the walk's lr used is the one it settled at, not its start

def test_resume_keeps_finished_runs_and_trains_the_rest(tmp_path):
    args = ['--dataset', 'synthetic', '--epochs', '1', '--lrs', '1e-2', '--out', str(tmp_path)]
    assert cli(*args, '--methods', 'fit').returncode == 0
    first = pd.read_csv(tmp_path / 'results.csv')
    res = cli(*args, '--methods', 'fit,walk', '--resume')
    assert res.returncode == 0, res.stderr
    after = pd.read_csv(tmp_path / 'results.csv')
    assert list(after['method']) == ['fit', 'walk']
    pd.testing.assert_frame_equal(after.iloc[:1], first)  # the finished run was not trained again

def test_help_answers_before_fastai_loads():
    res = cli('--help')
    assert res.returncode == 0 and res.stdout.startswith('usage: walkopt-compare') and res.stderr == '', res.stderr
    probe = "import sys\nfrom walkopt.cli import main\ntry: main(['--help'])\nexcept SystemExit: print(sorted({'fastai', 'torch'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, timeout=60).stdout.splitlines()[-1]
    assert loaded == '[]', loaded  # seconds of imports saved, and no warnings of theirs

@pytest.mark.parametrize('args, message', [
    (['--dataset', 'cifar10'], ["invalid choice: 'cifar10'", 'mnist1d', 'synthetic']),
    (['--methods', 'walk,sgdr'], ["unknown method 'sgdr': choose from lr_find+one_cycle, one_cycle, fit, walk"]),
    (['--lrs', '1e-3,0'], ['`lrs[1]` must be a finite number > 0']),
    (['--lrs', 'fast'], ["expected numbers separated by commas, got 'fast'"]),
    (['--epochs', '0'], ['`epochs` must be an integer >= 1']),
    (['--seeds', '0,-1'], ['`seeds` must be an integer >= 0']),
    (['--target', '80'], ['`--target` is an accuracy between 0 and 1 (80% is 0.8), got 80']),
])
def test_cli_refuses_bad_requests_before_training(tmp_path, args, message):
    res = cli('--out', str(tmp_path / 'out'), *args)
    assert res.returncode == 2 and all(m in res.stderr for m in message), res.stderr
    assert not (tmp_path / 'out' / 'results.csv').exists()

def test_cli_refuses_an_unwritable_out(tmp_path):
    (tmp_path / 'a_file').write_text('')
    res = cli('--out', str(tmp_path / 'a_file' / 'out'))
    assert res.returncode == 2 and 'cannot write results to' in res.stderr, res.stderr

def test_compare_on_a_users_own_learner():
    "Any make_learner works; a learner without metrics still gets losses and times"
    df = compare(tiny_learner, lrs=[1e-3], epochs=2, methods=['one_cycle', 'walk'], seeds=[0, 1], progress=False)
    assert len(df) == 2 * 2 * 2 and df['metric'].isna().all() and (df['valid_loss'] > 0).all()
    s = summarize(df)
    assert list(s['seeds']) == [2, 2] and s['valid_loss'].notna().all()
    with pytest.raises(ValueError, match='unknown method'): compare(tiny_learner, methods=['sgd'])

def test_resume_refuses_other_settings(tmp_path):
    args = ['--dataset', 'synthetic', '--lrs', '1e-2', '--methods', 'fit', '--out', str(tmp_path)]
    assert cli(*args, '--epochs', '1').returncode == 0
    res = cli(*args, '--epochs', '2', '--resume')
    assert res.returncode == 2 and 'other settings (epochs 1 -> 2)' in res.stderr, res.stderr
    assert len(pd.read_csv(tmp_path / 'results.csv')) == 1  # the 1-epoch run is left as it was

def test_ctrl_c_says_what_is_kept_in_one_line(tmp_path):
    # SIGINT handled as from a terminal: a background job of a non-interactive shell (CI's, say) starts with it ignored
    as_from_a_terminal = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    proc = subprocess.Popen([CLI, '--dataset', 'synthetic', '--epochs', '1', '--lrs', '1e-2,1e-3,1e-4,1e-5', '--methods', 'fit',
                             '--seeds', '0,1,2,3,4,5', '--out', str(tmp_path)], stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal)
    csv = tmp_path / 'results.csv'
    deadline = time.time() + 300
    while not (csv.exists() and csv.stat().st_size > 0) and time.time() < deadline: time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    lines = [l for l in err.splitlines() if l.strip() and 'Warning' not in l and 'warnings.warn' not in l]
    assert proc.returncode == 130 and len(lines) == 1, err
    assert 'interrupted;' in lines[0] and 'finished runs kept' in lines[0] and '--resume' in lines[0]
