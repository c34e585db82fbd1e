"""`pocus demo` runs the spine on the embedded default and on a folder given with --data."""

from conftest import run_cli


def test_demo_on_embedded_phantoms(tmp_path):
    result = run_cli("demo", "--steps", "2", "--out", str(tmp_path / "demo"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "student_loads_into_timm" in result.stdout and "True" in result.stdout
    assert (tmp_path / "demo" / "phantoms" / "manifest.csv").is_file()
    assert (tmp_path / "demo" / "distill" / "student.safetensors").is_file()
    from pocus_edge.runtime import verify_bundle

    manifest = verify_bundle(tmp_path / "demo" / "bundle-onnx")
    assert manifest["task"] == "embedding" and manifest["parity"]["status"] == "passed"


def test_demo_on_a_given_folder(phantom_dir, tmp_path):
    result = run_cli("demo", "--data", str(phantom_dir), "--steps", "2", "--out", str(tmp_path / "demo"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "demo" / "phantoms").exists()
