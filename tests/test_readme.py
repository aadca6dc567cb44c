"""The README's Python example runs as written (ViLT-B/32 size, random weights when the checkpoint is absent)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(section: str) -> str:
    text = README.read_text()
    start = text.index(f"## {section}")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_using_the_model_from_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no vilt_200k_mlm_itm.ckpt here: random initialisation
    namespace = {}
    exec(compile(readme_block("Using the model from Python"), "README.md", "exec"), namespace)
    assert "trainable: 796416" in capsys.readouterr().out
    assert namespace["out"].pooled.shape == (1, 768)
    assert namespace["cls_to_patches"].shape == (1, 12 * 15)
