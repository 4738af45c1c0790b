"""dev/gpu_check.sh, the one-call GPU measurement, runs on a machine with no emulator: here on the CPU in the smoke
profile, with ale_py and gymnasium hidden from Python as the GPU machine's bare image lacks them."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HIDE = '''
import sys
class _Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ale_py", "gymnasium"):
            raise ImportError(f"{name} is not installed on this machine")
        return None
sys.meta_path.insert(0, _Hidden())
'''


def test_the_gpu_check_needs_no_emulator(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(HIDE)
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PROFILE="smoke", DEVICE="cpu", BATCH="2", UPDATES="2", EPOCHS="2", PY=sys.executable,
               OMP_NUM_THREADS="1", PYTHONPATH=str(tmp_path / "site"))  # fmt: skip
    proc = subprocess.run(["bash", str(ROOT / "dev" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "bench: exit 0" in proc.stdout and "epochs: exit 0" in proc.stdout, proc.stdout + (out / "epochs.log").read_text()
    bench = json.loads((out / "bench.json").read_text())
    assert {"world_model", "rew_end_model", "actor_critic"} <= set(bench) and bench["device"] == "cpu"
    epochs = json.loads((out / "epochs.json").read_text())
    p = epochs["projection"]
    assert epochs["emulator_step_s"] == 0.0091 and p["measured_epochs"] == [2]
    assert p["total_s"] > p["later_epochs_training_s"] > 0 and p["evaluations_s"] is None
    assert "epochs in all" in proc.stdout
    # the emulator really was out of reach
    probe = subprocess.run([sys.executable, "-c", "import ale_py"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "not installed on this machine" in probe.stderr
