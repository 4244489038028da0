"""notebooks/*.ipynb: stored without outputs, and executed top to bottom (nbclient, a real kernel) against the
micro runs of the session fixture and against a directory with nothing in it. A cell that raises fails."""

import json
import os
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
TIMEOUT = 120  # seconds per cell


def execute(name: str, cwd: Path, parameters: str | None = None):
    """Runs the notebook in cwd (where ./runs is looked for); parameters replace the parameters cell."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    if parameters is not None:
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        cell.source = parameters
    nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs(nb) -> list[str]:
    """Every output of every cell as text: streams, text/plain and text/html, and 'PNG' per image."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                out.append(o["text"])
            elif "data" in o:
                out.append(o["data"].get("text/html") or o["data"].get("text/plain", ""))
                if "image/png" in o["data"]:
                    out.append("PNG")
    return out


def test_the_notebooks_are_stored_clean():
    assert {"runs", "routing", "research", "posttraining"} <= set(NAMES)
    for name in NAMES:
        raw = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
        first = nb.cells[0]
        assert first.cell_type == "markdown" and "**Set `" in first.source, f"{name}: first cell names the parameter"
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "= None" in params[0].source, f"{name}: one parameters cell defaulting to None"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: stored with outputs"
                assert len(cell.source.splitlines()) <= 8, f"{name}: a cell holds more than a few lines of logic"


@pytest.fixture(autouse=True)
def _no_location_env(monkeypatch):
    monkeypatch.delenv("NANOWHALE_RUNS", raising=False)  # the kernel inherits the environment
    monkeypatch.delenv("NANOWHALE_LEDGER", raising=False)


def test_runs_notebook(micro_runs):
    nb = execute("runs", micro_runs, parameters=f"RUNS = {[str(micro_runs / 'runs' / n) for n in 'ab']!r}")
    text = outputs(nb)
    table = text[0]
    assert "<td>a</td>" in table and "<td>b</td>" in table and "<td>done</td>" in table
    assert text.count("PNG") == 4 + 2  # loss, throughput, schedules, grad norm; an op profile per run
    assert "softcap_cross_entropy" in "".join(text)  # the op profile tables
    assert "--- a" in "".join(text)
    assert "no task evaluations yet" in "".join(text)  # a section without data says so


def test_routing_notebook_on_the_newest_run(micro_runs):
    os.utime(micro_runs / "runs" / "a" / "metrics.jsonl")  # the newest run: the default RUN = None finds it
    nb = execute("routing", micro_runs)
    text = outputs(nb)
    assert "<td>a</td>" in text[0] and "<td>b</td>" not in text[0]
    joined = "".join(text)
    assert joined.count("first-choice expert") == 2  # the token display of each MoE layer
    assert "entropy_over_log_E" in joined
    assert text.count("PNG") == 6  # load, balance, bias, co-selection, entropy, specialisation


def test_research_notebook_finds_the_ledger(micro_ledger):
    nb = execute("research", micro_ledger.parent.parent)  # LEDGER = None: the newest under ./research
    text = outputs(nb)
    joined = "".join(text)
    assert "<td>night1</td>" in text[0]  # the summary of the current tag
    assert "<td>qk-norm scale</td>" in joined and "<td>transferred</td>" in joined
    assert "<td>all</td>" in joined  # two agents: a row for each and one for all
    assert text.count("PNG") == 5  # progress, verdicts, kept, time control, transfer


def test_posttraining_notebook_on_the_newest_lineage(micro_lineage):
    nb = execute("posttraining", micro_lineage)
    text = outputs(nb)
    assert all(f"<td>{stage}</td>" in text[0] for stage in ("base", "sft", "dpo", "rl"))  # the lineage report
    assert text.count("PNG") == 1
    assert "<th>step 0</th>" in "".join(text)  # the replies each stage logged
    assert "<th>rl: rl</th>" in text[-1]  # the answers of every stage


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_says_so_when_there_is_no_data(name, tmp_path):
    nb = execute(name, tmp_path)
    joined = "".join(outputs(nb)).lower()
    assert "no run yet" in joined or "no ledger" in joined or "no lineage" in joined
