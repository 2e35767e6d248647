import subprocess
import sys
import time

from edge_gmm.cli.main import COMMANDS


def test_help_lists_every_command_and_is_fast():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "edge_gmm.cli.main", "--help"], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - t0
    for name in COMMANDS:
        assert name in out.stdout
    # lazy imports: --help must not pull torch (which alone takes seconds to import)
    assert elapsed < 5


def test_help_does_not_import_heavy_modules():
    code = "import sys; from edge_gmm.cli.main import main; main(['--help']); print(sorted(m for m in ('torch','onnx','onnxruntime','paho') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_unknown_command_exit_2_with_suggestion(cli):
    code, out, err = cli("trian")
    assert code == 2
    assert "did you mean 'train'" in err
    assert "Traceback" not in err


def test_every_command_has_help(cli):
    import pytest

    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            cli(name, "--help")
        assert e.value.code == 0, name
