"""Build the student version of the notebook series (course-assignment mode).

The notebooks in ``notebooks/`` are the teacher version: every exercise's solution
cell (tagged ``solution``) holds a working answer. The student version is the same
series with

* every solution cell replaced by a stub: its imports and the signature and
  docstring of each function it defines, with the body ``raise NotImplementedError``;
* all outputs cleared (students run the notebooks themselves).

The autograded check after each solution reports NOT DONE for a stub, so the student
version runs from top to bottom before any exercise is solved.

    python scripts/make_student_version.py [--out runs/student] [--notebooks 01 02 ...]

writes ``OUT/notebooks/*.ipynb``. OUT must not be the teacher ``notebooks/`` folder.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_TAG = "solution"
STUB_BODY = "raise NotImplementedError"


def stub_source(source: str) -> str:
    """The stub of one solution cell: imports kept, each function's body replaced.

    Raises ValueError when the cell defines no function (nothing for a student to write).
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    parts: list[str] = []
    functions = 0
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            parts.append("\n".join(lines[node.lineno - 1:node.end_lineno]))
        elif isinstance(node, ast.FunctionDef):
            functions += 1
            first_body = node.body[0]
            keep_until = first_body.end_lineno if _is_docstring(first_body) else first_body.lineno - 1
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            header = "\n".join(lines[start - 1:keep_until])
            indent = " " * (first_body.col_offset)
            parts.append(f"{header}\n{indent}# your code here\n{indent}{STUB_BODY}")
    if not functions:
        raise ValueError("a solution cell must define at least one function; got:\n" + source)
    return _join(parts)


def _join(parts: list[str]) -> str:
    """Imports first, then two blank lines before each function (PEP 8 layout)."""
    imports = [p for p in parts if not p.lstrip().startswith(("def ", "@"))]
    functions = [p for p in parts if p.lstrip().startswith(("def ", "@"))]
    return "\n".join(imports) + ("\n\n\n" if imports else "") + "\n\n\n".join(functions)


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def student_notebook(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """A copy of ``nb`` with stubbed solutions and no outputs; also the number of stubs."""
    nb = nbformat.from_dict(nb)
    stubs = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            cell.source = stub_source(cell.source)
            stubs += 1
    nb.metadata.pop("papermill", None)
    return nb, stubs


def build(out: Path, notebooks: list[str] | None = None) -> list[Path]:
    """Write the student version of the series (or of the chosen notebooks) to ``OUT/notebooks``."""
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if notebooks:
        sources = [p for p in sources if p.stem.split("_", 1)[0] in {n.zfill(2) for n in notebooks}]
    target_dir = (out / "notebooks").resolve()
    if target_dir == (ROOT / "notebooks").resolve():
        raise ValueError("refusing to overwrite the teacher notebooks: choose another --out")
    target_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        nb, stubs = student_notebook(nbformat.read(str(source), as_version=4))
        if not stubs:
            raise ValueError(f"{source.name}: no cell tagged '{SOLUTION_TAG}', so it has no exercise")
        target = target_dir / source.name
        nbformat.write(nb, str(target))
        written.append(target)
        print(f"{source.name}: {stubs} exercise(s) stubbed -> {target}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "student"), help="output folder")
    parser.add_argument("--notebooks", nargs="+", default=None, help="only these numbers (e.g. 01 04)")
    args = parser.parse_args(argv)
    try:
        build(Path(args.out), args.notebooks)
    except ValueError as exc:
        print(f"make_student_version: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
