"""Measured figures live in the result files the runs write; the docs link to them.

A *measured-looking figure* in README.md, notebooks/README.md or docs/*.md is a time
(``3.0 s``, ``18.6 min``), a memory size (``64 MB``), a ratio (``4.6x``), a percentage, a
spread (``± 0.08``, ``+/- 0.08``) or a metric value (``DSC 0.503``, ``MRE 16.7``). Each one
must either

* sit in a unit of text (a paragraph, list item or table row) that names a ``results/``
  file, and that file must hold the number (to the quoted decimals): the doc quotes the
  record, it does not retype a figure of its own; or
* be a fixed fact on the allow-list below, each entry checked against its source (the
  default ``TrainConfig``, a transform's parameters): a setting, not a measurement.

Anything else fails, naming the file, the line and the figure: move the figure into the
record its script writes and link that, or let the notebook print it. The comments of the
shipped profiles (``fmuia_lib/profiles/*.yaml``) may restate settings as ratios or
percentages, nothing measured.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parent.parent

#: The prose a user reads: what the rule covers.
DOC_FILES = ("README.md", "notebooks/README.md", *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))

_NUMBER = r"(?<![\w.])\d[\d,]*(?:\.\d+)?"
#: One alternative per kind of measured-looking figure; group ``n`` is the number.
MEASURED = re.compile(
    rf"(?P<time>(?P<n1>{_NUMBER})(?:-{_NUMBER})?\s?(?:ms|s|sec|seconds?|min|minutes?|h|hours?)\b)"
    rf"|(?P<memory>(?P<n2>{_NUMBER})(?:-{_NUMBER})?\s?(?:[kKMGT]i?B)\b)"
    rf"|(?P<ratio>(?P<n3>{_NUMBER})(?:-{_NUMBER})?x(?![\w]))"
    rf"|(?P<percent>(?P<n4>{_NUMBER})(?:-{_NUMBER})?\s?%)"
    rf"|(?P<spread>(?:±|\+/-)\s?(?P<n5>{_NUMBER}))"
    rf"|(?P<metric>\b(?:DSC|Dice|[Aa]ccuracy|IoU|MRE|AUC|F1|HD|margins?)\b(?:[^.\n|]|\.(?=\d)){{0,60}}?"
    rf"(?<![\w.])[-+]?(?P<n6>\d+\.\d+)(?![\w.]))")

RESULT_REF = re.compile(r"results/[\w.\-/]+\.(?:csv|md|ipynb|json)")


@dataclass(frozen=True)
class Figure:
    path: str
    line: int
    text: str     # the figure as written
    number: str   # its number
    unit: str     # the paragraph, list item or table row it sits in


@dataclass(frozen=True)
class Fact:
    """A fixed fact that looks like a measurement: ``phrase`` in ``path`` holds the figure,
    and ``check`` compares it with its source."""
    path: str
    phrase: str
    check: Callable[[], bool]
    why: str


def _head_lr_mult() -> bool:
    from fmuia_lib.config import TrainConfig
    return TrainConfig().head_lr_mult == 10.0


def _val_fraction() -> bool:
    from fmuia_lib.config import TrainConfig
    return TrainConfig().val_fraction == 0.2


def _baseline_noise() -> bool:
    from fmuia_lib.data.transforms import StrongGaussNoise
    return StrongGaussNoise().std_range == (0.2, 0.44)


#: Fixed facts, not measurements. Keep it small: each entry is a setting of the code whose
#: value the check reads from its source, so the sentence cannot drift from it.
FACTS = (
    Fact("README.md", "heads at 10x the encoder", _head_lr_mult,
         "the official recipe's head learning-rate multiplier (TrainConfig.head_lr_mult)"),
    Fact("docs/architecture.md", "heads at 10x", _head_lr_mult,
         "the official recipe's head learning-rate multiplier (TrainConfig.head_lr_mult)"),
    Fact("docs/architecture.md", "heads learn at 10x", _head_lr_mult,
         "the switch table's warmup_clipping reason (TrainConfig.head_lr_mult)"),
    Fact("notebooks/README.md", "a seeded 20 %", _val_fraction,
         "the share the baseline's split holds out (TrainConfig.val_fraction)"),
    Fact("docs/architecture.md", "std 20-44 %", _baseline_noise,
         "the baseline augmentation's noise (data.transforms.StrongGaussNoise.std_range)"),
)


def units(text: str) -> list[tuple[int, str]]:
    """``text`` cut into paragraphs, list items and table rows: (first line number, text)."""
    out: list[tuple[int, list[str]]] = []
    fence = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        starts_item = re.match(r"(\||[-*] |\d+\. )", stripped) is not None
        if stripped.startswith("```"):
            fence = not fence
            out.append((number, [line]))
            continue
        if not stripped:
            out.append((number, []))
        elif fence or starts_item or not out or not out[-1][1] or out[-1][1][0].lstrip().startswith("|"):
            out.append((number, [line]))
        else:
            out[-1][1].append(line)
    return [(first, "\n".join(lines)) for first, lines in out if lines]


def figures(path: str, text: str) -> list[Figure]:
    found = []
    for first, unit in units(text):
        for match in MEASURED.finditer(unit):
            number = next(match.group(g) for g in ("n1", "n2", "n3", "n4", "n5", "n6") if match.group(g))
            line = first + unit.count("\n", 0, match.start())
            found.append(Figure(path, line, match.group(0), number, unit))
    return found


def numbers_in(path: Path) -> list[str]:
    """Every number a result file holds as text (a notebook: its sources and outputs)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        parts = []
        for cell in json.loads(text)["cells"]:
            parts.append("".join(cell["source"]))
            for output in cell.get("outputs", []):
                parts.append("".join(output.get("text", "")))
                parts.extend("".join(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
        text = "\n".join(parts)
    return re.findall(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text.replace(",", ""))


def holds(number: str, held: list[str]) -> bool:
    """Whether a number in ``held`` rounds to ``number`` at its quoted decimals."""
    quoted = number.replace(",", "")
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    target = float(quoted)
    for text in held:
        value = abs(float(text))
        if math.isfinite(value) and round(value, decimals) == target:
            return True
    return False


def problems(path: str, text: str, facts=FACTS, root: Path = REPO) -> list[str]:
    """What is wrong with the figures of one doc: a figure with no record that holds it."""
    out = []
    own_facts = [f for f in facts if f.path == path]
    for figure in figures(path, text):
        unit = " ".join(figure.unit.split())
        if any(f.phrase in unit and figure.text in f.phrase for f in own_facts):
            continue
        references = RESULT_REF.findall(figure.unit)
        if not references:
            out.append(f"{path}:{figure.line}: {figure.text!r} is a measured-looking figure with no results/ "
                       "file named beside it: link the record that holds it instead")
            continue
        missing = [r for r in references if not (root / r).is_file()]
        if missing:
            out.append(f"{path}:{figure.line}: {figure.text!r} cites {', '.join(missing)}, which does not exist")
            continue
        if not any(holds(figure.number, numbers_in(root / r)) for r in references):
            out.append(f"{path}:{figure.line}: {figure.text!r}: {figure.number} is not in "
                       f"{', '.join(references)}")
    return out


@pytest.mark.parametrize("path", DOC_FILES)
def test_a_doc_quotes_only_figures_its_records_hold(path):
    text = (REPO / path).read_text(encoding="utf-8")
    assert problems(path, text) == []


@pytest.mark.parametrize("path", DOC_FILES)
def test_every_record_a_doc_names_exists(path):
    text = (REPO / path).read_text(encoding="utf-8")
    base = (REPO / path).parent
    named = set(RESULT_REF.findall(text)) | {m for m in re.findall(r"\]\(([^)#]+)\)", text) if "results/" in m}
    missing = [n for n in sorted(named) if not (REPO / n).exists() and not (base / n).exists()]
    assert missing == [], f"{path} names records that do not exist: {missing}"


def _settings(config) -> set[float]:
    """Every number a TrainConfig holds (dict values included), and each fraction as a percentage."""
    import dataclasses

    values: set[float] = set()
    for value in dataclasses.asdict(config).values():
        for v in (value.values() if isinstance(value, dict) else [value]):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values |= {float(v), round(100 * float(v), 6)}
    return values


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "fmuia_lib" / "profiles").glob("*.yaml")))
def test_a_profile_s_comments_restate_settings_only(path):
    """In a profile's comments a ratio or a percentage may restate a setting (heads at 3x, a
    seeded 20 %: a value of the profile's effective TrainConfig or of the defaults); a time,
    a memory size, a spread or a metric value is a measurement and belongs in a record."""
    from fmuia_lib.config import TrainConfig
    from fmuia_lib.profiles import load_profile

    allowed = _settings(TrainConfig()) | _settings(TrainConfig.from_dict(load_profile(REPO / path).train))
    wrong = comment_problems(path, (REPO / path).read_text(encoding="utf-8"), allowed)
    assert wrong == [], "measured-looking figures in profile comments (link the record instead): " + "; ".join(wrong)


def comment_problems(path: str, text: str, allowed: set[float]) -> list[str]:
    comments = "\n".join(line.split("#", 1)[1] if "#" in line else "" for line in text.splitlines())
    return [f"{path}:{f.line}: {f.text!r}" for f in figures(path, comments)
            if not (MEASURED.match(f.text).lastgroup in ("ratio", "percent")
                    and float(f.number.replace(",", "")) in allowed)]


def test_every_fixed_fact_holds_and_is_used():
    for fact in FACTS:
        assert fact.check(), f"{fact.path}: {fact.phrase!r} no longer matches {fact.why}"
        text = (REPO / fact.path).read_text(encoding="utf-8")
        assert fact.phrase in " ".join(text.split()), f"{fact.path} no longer says {fact.phrase!r}: drop it from FACTS"
        assert MEASURED.search(fact.phrase), f"{fact.phrase!r} holds no measured-looking figure: drop it from FACTS"


def test_the_readme_s_fixed_facts_match_their_source():
    """The counts and settings the README states are read here from the manifest and the
    default TrainConfig, so a change there fails until the README follows."""
    from collections import Counter

    from fmuia_lib.config import TrainConfig
    from fmuia_lib.tasks import load_manifest

    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    tasks = load_manifest().values()
    types = Counter(t.task_type for t in tasks)
    assert (f"**{len(tasks)} subtasks**: {types['segmentation']} segmentation, {types['classification']} "
            f"classification, {types['detection']} detection (one box per image) and {types['Regression']} "
            "landmark regression tasks") in readme
    assert f"cover {sum(bool(t.real_us_folder) for t in tasks)} subtasks" in readme
    official = TrainConfig()
    assert official.encoder == "efficientnet-b4" and official.epochs is not None
    assert (f"(EfficientNet-B4, {official.image_size} px, batch {official.batch_size}, {official.epochs} epochs, "
            f"lr {official.lr:.0e}".replace("e-0", "e-")) in readme


def test_the_rule_catches_a_retyped_or_unbacked_figure(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench.md").write_text("| fmuia evaluate | 3.04 s | 64.2 MB |\nspeed-up 4.6x\n")
    (tmp_path / "results" / "t.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "source": [], "outputs": [
        {"output_type": "stream", "text": ["accuracy 0.7843\n"]}]}]}))

    def check(text):
        return problems("README.md", text, facts=(), root=tmp_path)

    # quoted from the record, with the record named: fine (rounded to the quoted decimals)
    assert check("Scoring took 3.0 s and 64 MB, 4.6x faster (`results/bench.md`).\n") == []
    assert check("- accuracy 0.784 (results/t.ipynb)\n") == []
    # a figure with no record beside it, one the record does not hold, a record that is not there
    assert len(check("Scoring took 3.0 s.\n")) == 1
    assert "13.9 is not in results/bench.md" in check("Scoring took 13.9 s (results/bench.md).\n")[0]
    assert "does not exist" in check("It took 3.0 s (results/other.md).\n")[0]
    # the record named in another paragraph does not cover a figure
    assert len(check("See results/bench.md.\n\nScoring took 3.0 s.\n")) == 1
    for text in ("MRE 16.7 px", "margin 0.19 ± 0.08", "74 % better", "1.3 GB", "11.5 min", "1.31-1.41x"):
        assert check(text + "\n"), text
    # settings and counts are not measurements
    for text in ("27 subtasks", "256 px, batch 20, 50 epochs", "lr 1e-4", "3x3 conv", "B x C x H x W", "3 seeds"):
        assert check(text + "\n") == [], text
    # in a profile's comments: settings restated pass, measurements do not
    yaml = ("lr: 0.001  # heads at 3x\nx: 1  # a seeded 20 %\neval_every: 9  # ~10 s each\n"
            "a: 1  # 0.5x faster\nb: 2  # IoU 0.78\n")
    assert comment_problems("p.yaml", yaml, {3.0, 20.0}) == ["p.yaml:3: '10 s'", "p.yaml:4: '0.5x'",
                                                             "p.yaml:5: 'IoU 0.78'"]
    # a fact on the allow-list is accepted only inside its phrase
    fact = Fact("README.md", "heads at 10x the encoder", lambda: True, "test")
    assert problems("README.md", "heads at 10x the encoder\n", facts=(fact,), root=tmp_path) == []
    assert problems("README.md", "it ran 10x faster\n", facts=(fact,), root=tmp_path)


def test_a_benchmark_record_holds_what_the_run_printed_and_the_machine(tmp_path, capsys):
    import sys
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from record import recorded
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    path = tmp_path / "bench.md"
    with recorded("bench", path, "A bench", ["benchmarks/bench.py", "--repeat", "3"]):
        print("fmuia evaluate 3.04 s")
    text = path.read_text()
    assert "fmuia evaluate 3.04 s" in capsys.readouterr().out  # still printed
    assert text.startswith("# A bench") and "`python benchmarks/bench.py --repeat 3`" in text
    assert "fmuia evaluate 3.04 s" in text and "| CPU cores |" in text and "| commit |" in text
    assert holds("3.0", numbers_in(path))
    # a run that fails leaves the last good record as it was
    with pytest.raises(RuntimeError), recorded("bench", path, "A bench", ["benchmarks/bench.py"]):
        print("half a run")
        raise RuntimeError("failed")
    assert path.read_text() == text
    with recorded("bench", None):
        print("no record")
    assert path.read_text() == text
