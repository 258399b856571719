"""The ``fmuia`` command line.

Every verb is a thin shell over a library function; the arguments are declared here and
the work is done in the module named in ``COMMANDS``, imported only when that verb runs
(so ``fmuia --help`` stays fast).

Bad input is answered in one place, :func:`main`: an exception of a class listed in
``BAD_INPUT`` (each names the file, CSV line or config key and the problem) is printed as
``fmuia VERB: error: MESSAGE`` on stderr with exit status 2, without a traceback. Any
other exception is a bug in fmuia and keeps its traceback; Ctrl-C exits with 130, a closed
output pipe (``| head``) with 141.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import io
import os
import sys
import warnings

from fmuia_lib.paths import one_line

#: verb -> (module, function). Each function takes the parsed ``argparse.Namespace``
#: and returns a process exit code.
COMMANDS = {
    "data phantom": ("fmuia_lib.sources.phantom", "phantom_main"),
    "data real": ("fmuia_lib.sources.real", "real_main"),
    "data check": ("fmuia_lib.data.layout", "check_main"),
    "data cache": ("fmuia_lib.data.cache", "cache_main"),
    "train": ("fmuia_lib.runner.train_command", "train_main"),
    "predict": ("fmuia_lib.challenge.predict", "predict_main"),
    "evaluate": ("fmuia_lib.challenge.evaluate", "evaluate_main"),
    "validate-submission": ("fmuia_lib.challenge.evaluate", "validate_submission_main"),
    "export": ("fmuia_lib.challenge.export", "export_main"),
    "suite": ("fmuia_lib.runner.suite", "suite_main"),
    "course build": ("fmuia_lib.course", "build_main"),
    "course grade": ("fmuia_lib.course", "grade_main"),
}

#: The exceptions that mean bad input (module -> class names), each raised with a message that
#: names the file, line or key. Looked up only in modules already imported: an exception of a
#: class whose module was never imported cannot have been raised.
BAD_INPUT = {
    "fmuia_lib.config": ("ConfigError",),  # profiles.ProfileError is one
    "fmuia_lib.tasks": ("ManifestError",),
    "fmuia_lib.data.layout": ("LayoutError",),
    "fmuia_lib.data.images": ("ImageReadError",),
    "fmuia_lib.data.cache": ("CacheError",),
    "fmuia_lib.sources.phantom.render": ("PhantomError",),
    "fmuia_lib.sources.real.common": ("RealDataError",),
    "fmuia_lib.challenge.submission": ("SubmissionError",),
    "fmuia_lib.challenge.predict": ("ModelLoadError",),
    "fmuia_lib.challenge.export": ("ExportError",),
    "fmuia_lib.runner.run_folder": ("RunSetupError",),
    "fmuia_lib.checkpoint": ("CheckpointMismatch",),
    "fmuia_lib.state_file": ("StateFileError",),
    "fmuia_lib.training.loop": ("TrainingDiverged",),
    "fmuia_lib.course": ("CourseError",),
    "fmuia_lib.paths": ("OutputError",),
    "fmuia_lib.model": ("PretrainedWeightsUnavailable", "EncoderWeightsError"),
}


#: What the machine refuses, not fmuia's mistake: a disk full, a read-only mount, a missing
#: permission. Such an OSError, wherever it is raised, is one line naming the path.
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fmuia",
        description="Multi-task ultrasound image analysis (FM_UIA 2026): data, training, "
                    "prediction, evaluation and the notebook suite.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    # -- data -------------------------------------------------------------------------
    data = sub.add_parser("data", help="make, convert and check data in the challenge layout")
    dsub = data.add_subparsers(dest="data_verb", metavar="DATA_COMMAND", required=True)

    ph = dsub.add_parser("phantom", help="write the procedural ultrasound phantom (all 27 subtasks)")
    ph.add_argument("--out", required=True, help="output folder; gets train/ and val/ data roots")
    ph.add_argument("--seed", type=int, default=0, help="seed (same seed = byte-identical files)")
    ph.add_argument("--train", type=int, default=None, help="training images per subtask (default: the generator's)")
    ph.add_argument("--val", type=int, default=None, help="validation images per subtask (default: the generator's)")
    ph.add_argument("--tasks", nargs="+", default=None, metavar="TASK_ID",
                    help="only these subtasks (default: every task in the manifest)")
    ph.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    ph.add_argument("--overwrite", action="store_true", help="replace an existing phantom in --out")

    rl = dsub.add_parser("real", help="convert public ultrasound datasets into the challenge layout")
    rl.add_argument("--src", required=True, help="folder holding BUSI/, HC18/, CCAUI_carotid/, DDTI/, POCUS_lung/")
    rl.add_argument("--out", required=True, help="output folder; gets train/ and val/ data roots")
    rl.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    rl.add_argument("--val-fraction", type=float, default=0.25, help="share of each task held out")
    rl.add_argument("--overwrite", action="store_true", help="replace an existing conversion in --out")

    ck = dsub.add_parser("check", help="validate a data root (csv_files/ + image folders)")
    ck.add_argument("root", help="data root holding csv_files/")
    ck.add_argument("--manifest", default=None, help="manifest CSV (default: the packaged one)")
    ck.add_argument("--max-problems", type=int, default=200, help="problems to print (all are counted)")
    ck.add_argument("--header-only", action="store_true",
                    help="read only each image's header (format and size), not decode it: faster on huge "
                         "roots, but a cut-off or corrupt image is not found (masks are always decoded)")
    ck.add_argument("--verify-images", action="store_true", help=argparse.SUPPRESS)  # now the default

    ca = dsub.add_parser("cache", help="store a data root's images (and masks) once at the training resolution, "
                                       "memory-mapped, for loaders that cannot keep up with decoding")
    ca.add_argument("root", help="data root holding csv_files/")
    ca.add_argument("--out", required=True, help="cache folder (outside every data root); reused while the root, "
                                                 "the size and the files are unchanged, rebuilt otherwise")
    ca.add_argument("--size", type=int, default=256, help="training resolution in px (default 256)")
    ca.add_argument("--images-only", action="store_true", help="no masks (a label-free root, for fmuia predict)")
    ca.add_argument("--resize", choices=("antialias", "bilinear"), default="antialias",
                    help="the model's resize (TrainConfig.resize): antialias (fmuia's), bilinear (the official, OpenCV)")

    # -- train / predict / evaluate ---------------------------------------------------------
    tr = sub.add_parser("train", help="train the multi-task network")
    tr.add_argument("--config", default=None, metavar="PROFILE",
                    help="profile name (fmuia_lib/profiles/NAME.yaml) or YAML path: a profile, or a "
                         "mapping of TrainConfig fields (default: the library defaults)")
    tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config field (repeatable), e.g. --set max_steps=200")
    tr.add_argument("--resume", default=None, help="checkpoint to resume from")

    pr = sub.add_parser("predict", help="write a challenge-format submission")
    pr.add_argument("--checkpoint", required=True, help="training checkpoint, or an exported weights.pt")
    pr.add_argument("--data", required=True,
                    help="data root whose csv_files list the images to predict (labels not needed)")
    pr.add_argument("--out", required=True, help="submission folder (not the data root, nor in or around it)")
    pr.add_argument("--batch-size", type=int, default=16)
    pr.add_argument("--workers", type=int, default=0, help="image-reading processes (0: read in this one)")
    pr.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    pr.add_argument("--cache", default=None, metavar="DIR",
                    help="read the images through their prepared form in DIR (fmuia data cache: made there "
                         "at the model's size when missing or stale); pays when a root is predicted often")
    pr.add_argument("--unreadable", choices=("error", "fallback"), default="error",
                    help="an image that cannot be read: error (default: exit 2 naming it) or fallback "
                         "(the exported container's behaviour: read images by content as the challenge "
                         "does, give an image that still cannot be read a stand-in prediction, list it on "
                         "stderr and write a complete submission)")

    ev = sub.add_parser("evaluate", help="score a submission against ground truth")
    ev.add_argument("--data", required=True, help="data root with ground truth")
    ev.add_argument("--pred", required=True, help="submission folder")
    ev.add_argument("--json", default=None, help="also write every number to this JSON file")

    vs = sub.add_parser("validate-submission",
                        help="check a submission folder: errors (exit 1) apart from warnings (exit 0)")
    vs.add_argument("pred", help="submission folder")
    vs.add_argument("--data", required=True, help="data root whose csv_files list the expected images")

    from fmuia_lib.challenge.export import DEFAULT_BASE_IMAGE  # the standard library and fmuia_lib only

    ex = sub.add_parser("export", help="write a Docker build context in the challenge's form from a checkpoint")
    ex.add_argument("--checkpoint", required=True, help="training checkpoint (checkpoints/best.pt)")
    ex.add_argument("--out", required=True, help="folder for model.py, weights.pt, fmuia_lib/, Dockerfile ...")
    ex.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    ex.add_argument("--base-image", default=None, metavar="IMAGE",
                    help=f"the Dockerfile's base image (default: {DEFAULT_BASE_IMAGE}, which runs on a CUDA 12 "
                         "driver; 'checkpoint': the PyTorch image of the training run's torch and CUDA)")
    ex.add_argument("--weights-only", action="store_true",
                    help="write only --out/weights.pt (the weights for fmuia predict, for sharing)")

    # -- suite ------------------------------------------------------------------------------
    su = sub.add_parser("suite", help="run the notebook series headlessly with papermill")
    su.add_argument("--profile", default="cpu-smoke", help="profile name (fmuia_lib/profiles/NAME.yaml) or YAML path")
    su.add_argument("--data", default=None, help="data root (default: the profile's, or a fresh phantom)")
    su.add_argument("--out", default="runs/suite", help="output folder for executed notebooks, HTML, metrics")
    su.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one TrainConfig field in every notebook (repeatable)")
    su.add_argument("--notebooks", nargs="+", default=None, help="only these notebooks (names or numbers)")
    su.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    su.add_argument("--update-notebooks", action="store_true",
                    help="cpu-smoke only: run with the notebooks' defaults and save the outputs into notebooks/")

    # -- course -----------------------------------------------------------------------------
    co = sub.add_parser("course", help="the series as a graded course (otter-grader; needs fmuia[course])")
    csub = co.add_subparsers(dest="course_verb", metavar="COURSE_COMMAND", required=True)
    cb = csub.add_parser("build", help="write the student notebooks, public tests, autograders and solutions")
    cb.add_argument("--out", required=True, help="output folder: student/, autograder/, solutions/, exercises.csv")
    cb.add_argument("--source", default=None,
                    help="folder of the master notebooks (default: the checkout's notebooks/, else the working folder)")
    cb.add_argument("--notebooks", nargs="+", default=None, help="only these notebooks (names or numbers)")
    cb.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    cb.add_argument("--student-colab", default=None, metavar="URL",
                    help="the Colab address of the folder where you publish student/ (e.g. https://colab."
                         "research.google.com/github/OWNER/COURSE/blob/main/student): the student notebooks' "
                         "badges open it; without it they say to upload the notebook")
    cg = csub.add_parser("grade", help="grade submitted notebooks: points per exercise. It RUNS THE STUDENTS' CODE: "
                                       "each submission in a process of its own with a time limit on this machine, "
                                       "or in otter's Docker containers with --docker")
    cg.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="the students' notebooks (.ipynb)")
    cg.add_argument("--course", required=True, help="the folder `fmuia course build` wrote")
    cg.add_argument("--json", default=None, help="also write the points per exercise to this JSON file")
    cg.add_argument("--timeout", type=float, default=300.0,
                    help="seconds one submission may take (default 300); past it, it scores 0")
    cg.add_argument("--docker", action="store_true",
                    help="grade in otter's Docker containers (`otter grade`), isolated from this machine")
    return p


def _version() -> str:
    from fmuia_lib import __version__
    return f"fmuia {__version__}"


def bad_input_types() -> tuple[type[BaseException], ...]:
    """The classes of ``BAD_INPUT`` whose modules are imported."""
    found = []
    for module_name, names in BAD_INPUT.items():
        module = sys.modules.get(module_name)
        found += [getattr(module, name) for name in names if module is not None]
    return tuple(found)


def error_message(err: BaseException) -> str:
    """The message of a bad-input exception, without the traceback a DataLoader worker
    prepends when it raises the exception again in the main process."""
    text = str(err).rstrip()
    marker = f"{type(err).__module__}.{type(err).__name__}: "
    if text.startswith("Caught ") and marker in text:
        text = text.rsplit(marker, 1)[1].rstrip()
    return one_line(text) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verb = args.verb
    if verb in ("data", "course"):  # verbs with sub-verbs
        verb = f"{verb} {getattr(args, verb + '_verb')}"
    module_name, func_name = COMMANDS[verb]
    func = getattr(importlib.import_module(module_name), func_name)
    with warnings.catch_warnings():
        warnings.showwarning = _warning_printer(verb)
        return _run(verb, func, args)


def _warning_printer(verb: str):
    """A ``warnings.showwarning`` that prints ``fmuia VERB: warning: MESSAGE`` on one line."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"fmuia {verb}: warning: {one_line(str(message))}", file=sys.stderr)
    return show


def _run(verb: str, func, args) -> int:
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # whoever read stdout went away (`fmuia data check ROOT | head`)
        try:  # point stdout at /dev/null so that flushing it at exit raises nothing more
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass  # stdout is no file (a test's capture)
        return 141  # 128 + SIGPIPE, what a shell reports for a closed pipe
    except OSError as err:
        if err.errno not in MACHINE_ERRNOS:
            raise  # a bug: its traceback is what a report needs
        where = f"{err.filename}: " if err.filename else ""
        print(f"fmuia {verb}: error: {where}{one_line(err.strerror or str(err))}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - re-raised below unless it is bad input
        if not isinstance(err, bad_input_types()):
            raise  # a bug: its traceback is what a report needs
        print(f"fmuia {verb}: error: {error_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
