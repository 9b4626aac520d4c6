"""The quickstart notebook, run cell by cell in a real Jupyter kernel: it trains with a progress
bar, prints the accuracy and shows the result and the report, writing only to temporary
folders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from snugtune.store import CacheHome

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"
TQDM_BAR = re.compile(r"finetune \d/\d: +\d+%\|.*\| \d+/\d+ \[")  # tqdm's text bar


def test_the_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_quickstart_runs_in_a_kernel_and_shows_progress_accuracy_and_report(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel inherits this test's environment: ``$SNUGTUNE_CACHE_DIR`` (the conftest's)
    and ``$TMPDIR``, where the notebook makes its working folder."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert [o for o in outputs if o.output_type == "error"] == []
    stderr = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
    stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    shown = [o.data for o in outputs if o.output_type in ("execute_result", "display_data")]
    assert TQDM_BAR.search(stderr) or any(WIDGET in data for data in shown), stderr[-2000:]
    assert re.search(r"Final validation accuracy: \d+\.\d%", stdout), stdout

    result = [d for d in shown if d.get("text/plain", "").startswith("TrainResult(")]
    assert len(result) == 1 and "text/markdown" in result[0]
    html = result[0]["text/html"]
    assert re.search(r"Final validation accuracy \d+\.\d\d%, best", html)
    assert "Peak memory" in html and "<td>finetune</td>" in html
    assert "data:image/png;base64," in html and "<details>" in html  # curves, folded report
    assert any("Training phases" in d.get("text/html", "") and d is not result[0] for d in shown)

    runs = list(temp.glob("snugtune-quickstart-*/run"))
    assert len(runs) == 1 and (runs[0] / "report.html").is_file()
    assert CacheHome.at(cache_dir).index.is_file()  # the cache the environment names
