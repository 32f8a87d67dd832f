"""Mermaid output through the real Mermaid: mermaid-cli (``mmdc``) on a headless Chromium.

Every committed ``diagrams/*.mmd`` and a bounded sample of generated
definitions with hostile names (unicode identifiers, Mermaid's keywords) are
rendered; each must render, show every step and compensation name as the text
of its own node, and give that node the style class the text asks for.

The tools are not Python packages, so these tests skip, saying what is missing,
where they are absent. CI installs them (``.ci/run``) and sets
``STATESAGA_REQUIRE_MERMAID=1``, which turns the skip into a failure. Where to
find them: ``STATESAGA_MMDC`` (else ``mmdc`` on ``PATH``) and
``STATESAGA_CHROMIUM`` (else ``chromium``, ``chromium-browser`` or
``google-chrome`` on ``PATH``).

``mmdc`` starts a browser for each run, so diagrams are rendered in batches: one
Markdown file of ``mermaid`` blocks per run, one SVG out per block.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from definitions.order import OrderSaga
from definitions.transfer import TransferSaga
from definitions.trip import TripSaga
from statesaga import Saga, SagaEngine
from statesaga.diagrams import GraphModel, model_of, scripted_run, to_mermaid
from statesaga.diagrams.generate import drawings
from tests.diagram_strategies import hostile_names, runs

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
#: Definitions per rendering run, and runs, in the property test: enough to meet
#: many names, few enough to keep CI fast (each run starts a browser).
BATCH, BATCHES = 3, 2


@attrs.frozen
class MermaidCli:
    """mermaid-cli with a Puppeteer configuration that points it at a browser."""

    mmdc: str
    config: Path
    workdir: Path

    def render(self, diagrams: Sequence[str]) -> list[str]:
        """The SVG of each Mermaid text, rendered in one run of ``mmdc``.

        Raises:
            AssertionError: naming each diagram Mermaid rejected, with its text
                and what ``mmdc`` said.
        """
        svgs, said = self._run(diagrams, "batch")
        if svgs is not None:
            return svgs
        # Something failed: render one at a time, to say which.
        failures = []
        for i, text in enumerate(diagrams):
            one, one_said = self._run([text], f"one-{i}")
            if one is None:
                failures.append(f"diagram {i + 1}:\n{text}\nmmdc said: {one_said}")
        raise AssertionError("Mermaid rejected:\n\n" + "\n\n".join(failures or [said]))

    def _run(self, diagrams: Sequence[str], name: str) -> tuple[list[str] | None, str]:
        """The SVGs of one ``mmdc`` run (``None`` if it failed), and what it said."""
        source = self.workdir / f"{name}.md"
        source.write_text("\n".join(f"```mermaid\n{t}```\n" for t in diagrams), encoding="utf-8")
        target = self.workdir / f"{name}-out.md"
        svgs = [self.workdir / f"{name}-out-{i}.svg" for i in range(1, len(diagrams) + 1)]
        for p in svgs:  # left by an earlier batch: never read them as this one's
            p.unlink(missing_ok=True)
        proc = subprocess.run(
            [self.mmdc, "-q", "-p", str(self.config), "-i", str(source), "-o", str(target)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        said = (proc.stderr or proc.stdout).strip()[-2000:]
        if proc.returncode != 0 or not all(p.is_file() for p in svgs):
            return None, said
        return [p.read_text(encoding="utf-8") for p in svgs], said


def _find(env: str, names: Sequence[str]) -> str | None:
    given_path = os.environ.get(env)
    if given_path:
        return given_path if Path(given_path).is_file() else None
    return next((p for p in map(shutil.which, names) if p), None)


@pytest.fixture(scope="module")
def mermaid_cli(tmp_path_factory: pytest.TempPathFactory) -> MermaidCli:
    """mermaid-cli on the system's Chromium; skips (fails where
    ``STATESAGA_REQUIRE_MERMAID`` is set) if either is missing."""
    mmdc = _find("STATESAGA_MMDC", ["mmdc"])
    browser = _find("STATESAGA_CHROMIUM", ["chromium", "chromium-browser", "google-chrome"])
    missing = [
        what
        for what, found in (
            ("mermaid-cli's mmdc (npm install @mermaid-js/mermaid-cli; or STATESAGA_MMDC)", mmdc),
            ("a Chromium (apt-get install chromium; or STATESAGA_CHROMIUM)", browser),
        )
        if not found
    ]
    if missing:
        reason = "the real Mermaid renderer needs " + " and ".join(missing)
        if os.environ.get("STATESAGA_REQUIRE_MERMAID"):
            pytest.fail(reason + " (STATESAGA_REQUIRE_MERMAID is set: .ci/run installs them)")
        pytest.skip(reason + "; .ci/run installs both")
    assert mmdc and browser
    workdir = tmp_path_factory.mktemp("mermaid")
    config = workdir / "puppeteer.json"
    # No sandbox: Chromium refuses to start as root with one, and CI runs as
    # root; the pages rendered are our own diagrams.
    config.write_text(json.dumps({"executablePath": browser, "args": ["--no-sandbox"]}))
    return MermaidCli(mmdc, config, workdir)


def check_rendering(text: str, svg: str, model: GraphModel) -> None:
    """``svg`` shows every step and compensation of ``model`` by name, each in
    the node the Mermaid ``text`` declares for it, styled with the class the
    text gives that node; and no error."""
    root = ET.fromstring(svg)
    texts = [t.strip() for el in root.iter() if el.tag != f"{SVG}style" for t in el.itertext()]
    assert not any("Syntax error" in t for t in texts), "Mermaid drew its error picture"
    class_of = {
        id: name
        for ln in text.splitlines()
        if (m := re.fullmatch(r"    class (\S+) (\S+)", ln))
        for id, name in ((i, m[2]) for i in m[1].split(","))
    }
    id_of = {m[2]: m[1] for m in re.finditer(r'^    (\w+)\["<b>([^<]*)</b>', text, re.M)}
    nodes = {
        m[1]: g
        for g in root.iter(f"{SVG}g")
        if "node" in g.get("class", "").split()
        and (m := re.search(r"-flowchart-(.+)-\d+$", g.get("id", "")))
    }
    for n in [*model.steps, *model.compensations]:
        assert n.id in texts, f"{n.id!r} is not in the rendered text"
        id = id_of[n.id]
        g = nodes[id]
        assert n.id in [t.strip() for t in g.itertext()], f"{n.id!r} is not in node {id}"
        assert class_of[id] in g.get("class", "").split(), (n.id, id, g.get("class"))


def test_every_committed_diagram_renders(mermaid_cli: MermaidCli) -> None:
    """Each ``diagrams/*.mmd`` renders, and shows each step and compensation of
    its saga by name, in its own node, styled as the file says."""
    models = {d.stem: d.model for d in drawings([OrderSaga, TripSaga, TransferSaga])}
    files = sorted((ROOT / "diagrams").glob("*.mmd"))
    assert {f.stem for f in files} == set(models)
    texts = [f.read_text(encoding="utf-8") for f in files]
    for f, text, svg in zip(files, texts, mermaid_cli.render(texts), strict=True):
        check_rendering(text, svg, models[f.stem])


@settings(
    max_examples=BATCHES,
    deadline=None,
    # Shrinking would start a browser per attempt; a failure names the
    # diagram Mermaid rejected, with its text, instead.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(runs(hostile_names()), min_size=BATCH, max_size=BATCH))
def test_definitions_with_hostile_names_render(
    mermaid_cli: MermaidCli,
    engine: SagaEngine,
    batch: list[tuple[type[Saga], dict[str, int | None]]],
) -> None:
    """Random definitions whose steps and compensations are named by unicode
    identifiers and Mermaid's keywords, drawn bare (left to right) and with a
    scripted run laid over them (top to bottom for every other one): each
    renders in the real Mermaid with every name in its own, rightly styled node."""
    models: list[GraphModel] = []
    texts: list[str] = []
    for i, (saga, script) in enumerate(batch):
        saga_id = f"{saga.spec.name}-hostile"
        run = scripted_run(saga, engine, saga_id, script)
        overlay = model_of(saga).with_path(
            engine.history(saga_id), run.status.value, saga_id=saga_id
        )
        models += [model_of(saga), overlay]
        texts += [to_mermaid(model_of(saga)), to_mermaid(overlay, "TB" if i % 2 else "LR")]
    for model, text, svg in zip(models, texts, mermaid_cli.render(texts), strict=True):
        check_rendering(text, svg, model)
