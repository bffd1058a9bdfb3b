"""The runtime ships to the robot without torch: importing it must not import torch."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["vss_edge", "vss_edge.runtime", "vss_edge.runtime.pipeline", "vss_edge.runtime.sources", "vss_edge.runtime.outputs", "vss_edge.cli", "vss_edge.calibration.check"])
def test_import_does_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runtime_runs_a_bundle_without_torch(gsvnet_bundle):
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "import numpy as np, vss_edge\n"
        "from vss_edge.runtime.sources import open_source, sample_clip_path\n"
        f"pipe = vss_edge.load(r'{gsvnet_bundle}', device='cpu')\n"
        "with open_source(sample_clip_path()) as src:\n"
        "    results = [pipe.step(f) for _, f in zip(range(3), src)]\n"
        "assert [r.is_key for r in results] == [True, False, False]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_export_without_torch_says_which_extra_to_install(tmp_path):
    code = ("import sys\nsys.modules['torch'] = None\nfrom vss_edge.cli import main\n"
            f"sys.exit(main(['export', 'gsvnet', '--out', r'{tmp_path / 'b'}']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert "vss-edge[export]" in done.stderr and "Traceback" not in done.stderr
