"""The ``jaxnas`` command line: ``search``, ``train``, ``optimize``, ``eval``, ``genotype``, ``plot``, ``prepare``.

Bad input of any kind ends in one line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys

import jax

from jaxnas import api, distributed, plot, rundir
from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import genotype as genotype_lib
from jaxnas.driver import Preempted, Stopped
from jaxnas.errors import JaxnasError


def _setup_jax(cache_dir: str) -> None:
    """Persistent XLA compilation cache: repeated runs skip most of the compile time."""
    cache = cache_dir or os.environ.get("JAXNAS_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxnas", "xla")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _resolve(args, overrides: list[str], kind: str):
    """The run's config: a new run's, or the one ``--resume`` continues, checked field by field."""
    extra = [f"--config.genotype={args.genotype}"] if getattr(args, "genotype", "") else []
    if getattr(args, "strategy", ""):
        extra.append(f"--config.search.strategy={args.strategy}")
    if getattr(args, "space", ""):
        extra.append(f"--config.space.name={args.space}")
    given = _imports(overrides)  # modules named on the command line register their spaces before the config is read
    config_lib.import_extensions(given)
    if args.resume:
        cfg = config_lib.for_resume(args.resume, args.config, overrides + extra, kind)
        config_lib.check_run_imports(cfg.run.imports, given, args.resume)
    else:
        cfg = config_lib.apply_overrides(config_lib.load(args.config, kind), overrides + extra)
        if args.config and args.config.partition(":")[0].endswith(".json"):  # data: it names, never imports
            config_lib.check_run_imports(cfg.run.imports, given, args.config, "config file")
        else:
            config_lib.import_extensions(cfg.run.imports)  # a Python config is code the user runs
    return cfg


def _run_dir(args, cfg, kind: str) -> str:
    """The run directory: made for a new run, or the resumed one; held (``rundir.lock``) for the rest of
    this process, so a second process on the same run stops at once."""
    if args.resume:
        path = args.resume
        rundir.lock(path)
        try:
            with rundir.disk_errors(path):
                rundir.record_resume(path)
        except BaseException:
            rundir.unlock(path)
            raise
    else:
        path = rundir.create(cfg, kind)
        rundir.lock(path)
    print(f"run directory: {path}", flush=True)
    return path


def _imports(overrides: list[str]) -> str:
    """The ``--config.run.imports=`` of the command line (the last one), or ''."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("--config.run.imports=")]
    return given[-1] if given else ""


def _only_imports(overrides: list[str]) -> str:
    """``eval`` and ``plot`` take no overrides but ``--config.run.imports``."""
    bad = [o for o in overrides if not o.startswith("--config.run.imports=")]
    if bad:
        raise _UsageError(f"unrecognized arguments: {' '.join(bad)} (only --config.run.imports=... is taken here)")
    given = _imports(overrides)
    config_lib.import_extensions(given)
    return given


def _log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


@contextlib.contextmanager
def _cleaning_up(path: str, resume: bool):
    """Run the body; a new run that fails before writing any result leaves no folder behind."""
    try:
        yield
    except JaxnasError:
        if not resume and jax.process_index() == 0 and rundir.only_started(path):
            shutil.rmtree(path, ignore_errors=True)
        raise


def _run(args, overrides: list[str], kind: str, check, run, what: str, handoff: str):
    """A search, training or optimization from the command line. ``check`` is the run's own setup: every
    check the run makes, made before the run directory exists (``--check`` stops there), and its result
    (the loaded data, optimize's plan) is handed to ``run`` as the keyword ``handoff``, so the data is
    loaded once and nothing the run would refuse leaves a folder behind. A failure after that still
    removes the folder if no result was written. Returns ``(result or None, run dir)``."""
    cfg = _resolve(args, overrides, kind)
    if not args.check:  # a run joins its process group before JAX starts (the setup initializes the backend)
        _setup_jax(cfg.run.compile_cache)
        distributed.initialize(cfg.run, log=lambda msg: print(msg, flush=True))
    prepared = check(cfg)
    if args.check:
        print(f"ok: the config, {what} are valid (nothing was run)")
        return None, None
    path = _run_dir(args, cfg, kind)
    try:
        with _cleaning_up(path, bool(args.resume)), rundir.disk_errors(path):
            return run(cfg, path, log=_log, resume=bool(args.resume), **{handoff: prepared}), path
    finally:
        rundir.unlock(path)


def cmd_search(args, overrides: list[str]) -> int:
    result, path = _run(args, overrides, "search", api.check_search, api.run_search, "data and space", "data")
    if result is None:
        return 0
    found = (result.get("result") or {}).get("arch") or result["genotype"]
    _log(f"final architecture: {found}")
    if jax.process_index() == 0 and result.get("history") and "best_score" in result["history"][-1]:
        plot.best_so_far(result["history"], os.path.join(path, "plots"))  # discrete searches
    return 0


def cmd_train(args, overrides: list[str]) -> int:
    _run(args, overrides, "train", api.check_train, api.run_train, "genotype, data and network", "data")
    return 0


def cmd_optimize(args, overrides: list[str]) -> int:
    result, path = _run(args, overrides, "optimize", api.check_optimize, api.run_optimize,
                        "data, split, baseline and search space", "plan")
    if result is not None:
        _log(f"report: {os.path.join(path, 'report.md')}")
    return 0


def cmd_eval(args, overrides: list[str]) -> int:
    imports = _only_imports(overrides)
    _setup_jax("")
    api.evaluate_run(args.run_dir, imports=imports)
    return 0


def cmd_genotype(args, overrides: list[str]) -> int:
    if overrides:
        raise _UsageError(f"unrecognized arguments: {' '.join(overrides)}")
    g = genotype_lib.load(args.genotype)
    print(g.to_json())
    return 0


def cmd_plot(args, overrides: list[str]) -> int:
    imports = _only_imports(overrides)
    for path in plot.plot_run(args.run_dir, args.out or None, imports=imports):
        print(path)
    return 0


def cmd_prepare(args, overrides: list[str]) -> int:
    data_lib.prepare_tfds(args.dataset, args.data_dir or None)
    print(f"prepared {args.dataset}")
    return 0


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage and exits 2; we want one line
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaxnas", description="Neural architecture search in JAX.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("search", help="run an architecture search (default: a short DARTS search on digits)",
                       epilog="Override any config field with --config.<field>=<value>, "
                              "e.g. --config.search.epochs=3 --config.space.ops=none,skip_connect,sep_conv_3x3")
    s.add_argument("--config", default=None, help="configs/<name>.py[:arg] or a .json config (default: tiny digits)")
    s.add_argument("--resume", default="", metavar="RUN_DIR", help="continue a stopped search from its last checkpoint")
    s.add_argument("--strategy", default="", help="shorthand for --config.search.strategy "
                                                   "(darts, random, greedy, evolution, rsws)")
    s.add_argument("--space", default="", help="shorthand for --config.space.name (darts, nb201, chain)")
    s.add_argument("--check", action="store_true", help="check the config, data and space, then stop (no run)")
    s.set_defaults(fn=cmd_search)
    t = sub.add_parser("train", help="retrain a genotype from scratch and test it (default: DARTS_V2, tiny, digits)")
    t.add_argument("--config", default=None, help="configs/<name>.py[:arg] or a .json config (default: tiny digits)")
    t.add_argument("--genotype", default="", help="a published name (DARTS_V2) or runs/<search run>/genotype.json")
    t.add_argument("--resume", default="", metavar="RUN_DIR", help="continue a stopped training from its last checkpoint")
    t.add_argument("--check", action="store_true", help="check the config, genotype and data, then stop (no run)")
    t.set_defaults(fn=cmd_train)
    o = sub.add_parser("optimize", help="split a dataset, train a baseline, optimize architecture and "
                                        "hyperparameters on val, compare both on test (default: digits)",
                       epilog="e.g. --config configs/optimize_digits.py --config.data.name=my_data.npz "
                              "--config.optimize.trials=50")
    o.add_argument("--config", default=None, help="configs/<name>.py[:arg] or a .json config (default: digits)")
    o.add_argument("--resume", default="", metavar="RUN_DIR", help="continue a stopped run; finished trials are kept")
    o.add_argument("--check", action="store_true", help="check the config, data and split, then stop (no run)")
    o.set_defaults(fn=cmd_optimize)
    e = sub.add_parser("eval", help="reload a train run's weights and recompute its test metrics")
    e.add_argument("run_dir")
    e.set_defaults(fn=cmd_eval)
    g = sub.add_parser("genotype", help="print a published or saved genotype as JSON")
    g.add_argument("genotype", help="a published name (DARTS_V1, DARTS_V2) or a genotype .json file")
    g.set_defaults(fn=cmd_genotype)
    pl = sub.add_parser("plot", help="draw a run's cells, alphas over epochs and curves (PNG and SVG)")
    pl.add_argument("run_dir")
    pl.add_argument("--out", default="", help="output folder (default: <run_dir>/plots)")
    pl.set_defaults(fn=cmd_plot)
    r = sub.add_parser("prepare", help="download and prepare a TFDS dataset once (needs jaxnas[prepare])")
    r.add_argument("dataset")
    r.add_argument("--data_dir", default="")
    r.set_defaults(fn=cmd_prepare)
    return p


def main(argv: list[str] | None = None) -> int:
    from jaxnas.errors import JaxnasError

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
        bad = [a for a in rest if not a.startswith("--config.")]
        if bad:
            raise _UsageError(f"unrecognized arguments: {' '.join(bad)} (config overrides look like --config.a.b=value)")
        return args.fn(args, rest)
    except (JaxnasError, _UsageError) as e:
        message = str(e).replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever the input held
        print(f"jaxnas: error: {message}", file=sys.stderr)
        return 2
    except (Preempted, Stopped) as e:
        print(f"jaxnas: stopped by {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("jaxnas: interrupted", file=sys.stderr)
        return 130


def entry() -> int:
    """The ``jaxnas`` command: :func:`main`, in a process restarted once with glibc's huge-page tunable
    where that helps (``jaxnas.hugepages``; ``JAXNAS_HUGE_PAGES=0`` turns it off)."""
    from jaxnas import hugepages

    hugepages.reexec()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
