"""The distribution: registration through the entry point, a light entry module, and tasks shipped in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_lmms_eval_lists_the_model_in_a_fresh_interpreter_without_environment():
    code = (
        "import sys; from lmms_eval.models import list_available_models; "
        "ids = list_available_models(True); "
        "assert 'qwen2_5_omni_safe' in ids, 'not registered'; "
        "assert 'omni_lmms_plugin.adapter' not in sys.modules, 'the adapter was imported eagerly'; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], env={}, capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_the_entry_point_module_imports_neither_torch_nor_transformers():
    code = (
        "import sys, omni_lmms_plugin.registration as r; m = r.manifests(); "
        "assert m.model_id == 'qwen2_5_omni_safe' and m.simple_class_path.endswith('Qwen25OmniSafe'); "
        "bad = [n for n in ('torch', 'transformers') if n in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_registered_class_path_resolves_to_a_simple_lmms_model():
    from lmms_eval.api.model import lmms
    from lmms_eval.models import get_model

    cls = get_model("qwen2_5_omni_safe")
    assert issubclass(cls, lmms) and cls.is_simple


@pytest.mark.slow
def test_the_wheel_ships_the_task_yamls(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("omni_lmms_plugin-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {name for name in names if name.startswith("omni_lmms_plugin/tasks/")}
    expected = {
        "omni_lmms_plugin/tasks/" + str(p.relative_to(ROOT / "tasks")) for p in (ROOT / "tasks").rglob("*.yaml")
    }
    assert expected, "no task YAMLs in tasks/"
    assert expected <= shipped
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[lmms_eval.models]" in text and "omni_lmms_plugin.registration:manifests" in text
    assert "omni-lmms = omni_lmms_plugin.cli:main" in text


def test_qwen_omni_utils_is_a_test_dependency_only():
    """The package never imports qwen-omni-utils (the parity tests' reference); catches it back among the hard
    dependencies or imported by a package module."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("qwen-omni-utils")]
    assert [d for d in project["optional-dependencies"]["test"] if d.startswith("qwen-omni-utils")]
    sources = (ROOT / "omni_lmms_plugin").rglob("*.py")
    assert not [p for p in sources if "qwen_omni_utils" in p.read_text()]
