"""``labline`` command line: thin entry points over the library.

``labline train`` is a Hydra application (overrides, ``--cfg``, ``--help``,
``-m``); the ``labline stage ...`` commands are what DVC stages call: they
read the already-composed ``params.yaml`` and never create Hydra run
directories, so DVC's declared outputs stay where dvc.yaml says.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from labline.core.errors import ConfigError, exit_with
from labline.core.interrupts import Interrupted
from labline.core.paths import config_dir, workspace_root

HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--multirun", "-m", "--shell-completion",
               "-sc", "--resolve", "--package", "-p", "--version", "--config-path", "-cp", "--config-name", "-cn",
               "--config-dir", "-cd", "--experimental-rerun"}


MULTIRUN = {"-m", "--multirun"}


def _precheck(argv: Sequence[str]) -> None:
    """Compose the words and check run-wide values before Hydra makes a run folder or Lightning is imported.
    In a ``-m`` sweep only the words that are not sweeps compose (a sweep's values are checked per job)."""
    flags = HYDRA_FLAGS.intersection(argv)
    if flags - MULTIRUN:
        return
    from omegaconf import OmegaConf

    from labline.core.config import compose_config, without_sweeps
    from labline.core.values import check_values, check_writable
    from labline.tracking.store import URI_ENV, check_uri, tracking_uri

    words = [a for a in argv if not a.startswith("-")]
    cfg = compose_config(without_sweeps(words) if flags else words)
    configured = OmegaConf.select(cfg, "logger.tracking_uri", default=None)
    uri = tracking_uri(configured)  # checks a URI the user gave
    key = "hydra.sweep.dir" if flags else "hydra.run.dir"
    given = [w.split("=", 1)[1] for w in words if w.startswith(f"{key}=")]
    check_writable(Path(given[-1] if given else "multirun" if flags else "outputs"), key,
                   f"a folder you can write: run from a copy of the project, or {key}=<folder> with MLFLOW_TRACKING_URI "
                   "set to a store elsewhere")
    if not (configured or os.environ.get(URI_ENV)):  # the project's own store, in the project folder
        check_uri(uri, "logger.tracking_uri")
    if not flags:
        check_values(cfg)
        from labline.data.pipeline import preload

        preload(cfg, workspace_root())


def _drop_empty_run_dir(out_dir: Path) -> None:
    """A rejected job leaves nothing behind: its run folder goes when it holds only Hydra's ``.hydra`` record
    (and the date folder above it when that is then empty)."""
    if any(p.is_file() and ".hydra" not in p.relative_to(out_dir).parts for p in out_dir.rglob("*")):
        return
    shutil.rmtree(out_dir, ignore_errors=True)
    if out_dir.parent.is_dir() and not any(out_dir.parent.iterdir()):
        out_dir.parent.rmdir()


def _train(argv: Sequence[str]) -> None:
    _precheck(argv)
    import hydra

    @hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
    def job(cfg) -> dict:  # noqa: ANN001 - Hydra passes a DictConfig
        from hydra.core.hydra_config import HydraConfig

        from labline.job import train_job

        out_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            return train_job(cfg, out_dir, workspace_root())
        except ConfigError as err:
            _drop_empty_run_dir(out_dir)
            exit_with(err)

    sys.argv = ["labline train", *argv]
    from labline.studies.multirun import close_parent

    try:
        job()
    except BaseException as error:
        close_parent(error)
        raise


HELP = {
    "ablate": "usage: labline ablate ablation=NAME [seeds=[0,1]] [design=...] [components=[a,b]] [workers=N] "
              "[training overrides] [backend=slurm slurm.KEY=VALUE]\n\nRun an ablation study (conf/ablation/NAME.yaml): "
              "one training per component and seed under one MLflow parent, then its table (docs/ablation.md).",
    "report": "usage: labline report ablation=NAME | parent=RUN_ID\n\nRebuild an ablation study's table from MLflow "
              "alone: the latest study of ablation NAME, or the study whose parent run is RUN_ID.",
}


def _words_or_help(command: str, argv: Sequence[str]) -> list[str] | None:
    """The ``key=value`` words of ``labline ablate`` / ``labline report``, or None after printing their help."""
    if {"-h", "--help"}.intersection(argv):
        print(HELP[command])
        return None
    return list(argv)


def _ablate(argv: Sequence[str]) -> None:
    from labline.studies.ablation.cli import ablate

    if (words := _words_or_help("ablate", argv)) is not None:
        ablate(words)


def _report(argv: Sequence[str]) -> None:
    from labline.studies.ablation.cli import report

    if (words := _words_or_help("report", argv)) is not None:
        report(words)


def _load_params(path: str):  # noqa: ANN202 - DictConfig
    from omegaconf import OmegaConf

    file = Path(path)
    if not file.exists():
        raise ConfigError(path, "params file not found", "run `labline params` to compose it from conf/")
    return OmegaConf.load(file)


def _stage(args: argparse.Namespace) -> None:
    from labline import stages

    cfg = _load_params(args.params)
    stages.run_stage(args.name, cfg, workspace_root())


def _params(args: argparse.Namespace) -> None:
    from omegaconf import OmegaConf

    from labline.core.config import compose_config

    cfg = compose_config(args.overrides)
    OmegaConf.resolve(cfg)
    text = OmegaConf.to_yaml(cfg)
    target = Path(args.output)
    if args.check:
        current = target.read_text() if target.exists() else ""
        if OmegaConf.create(current) != OmegaConf.create(text):
            print(f"labline: {target} differs from what conf/ composes; run `labline params` to regenerate it",
                  file=sys.stderr)
            sys.exit(1)
        print(f"{target} matches conf/")
        return
    target.write_text(text)
    print(f"wrote {target}")


def _metrics(args: argparse.Namespace) -> None:
    from labline.reporting.console import metrics_table

    path = Path(args.path)
    if not path.exists():
        raise ConfigError(args.path, "metrics file not found", "run `dvc repro` first")
    metrics_table(json.loads(path.read_text()), title=f"test metrics ({path})")
    print("Open the results: `make ui` (MLflow on http://127.0.0.1:5000), `dvc plots show`, `dvc exp show`.")


def _reproduce(args: argparse.Namespace) -> None:
    from labline.studies.reproduce import reproduce

    result = reproduce(args.run_id, workspace_root(), allow_drift=args.allow_drift)
    print(f"new run {result['run_id']}: " + ("metrics identical to the recorded run" if result["identical"]
                                             else "metrics differ from the recorded run"))


def _evaluate(args: argparse.Namespace) -> None:
    from labline.studies.shift import evaluate_run

    result = evaluate_run(args.run_id, args.shift, workspace_root(), Path(args.output) if args.output else None)
    print(f"shift evaluation run {result['run_id']} (nested under {args.run_id})")


def _docs(args: argparse.Namespace) -> None:
    """components.md from conf/, and every results table from pipelines/results/metrics (stale rows marked)."""
    from labline.reporting.components_doc import render, write
    from labline.reporting.results_doc import render_all
    from labline.studies.results import load_spec, measured, stale_rows

    root = workspace_root()
    spec = load_spec(root)
    rendered = {Path(args.output): render(config_dir()),
                **render_all(root, spec, measured(root, spec), stale_rows(root, spec))}
    if args.check:
        differ = [str(p) for p, text in rendered.items() if not p.is_file() or p.read_text() != text]
        if differ:
            raise ConfigError(", ".join(differ), "differs from a fresh rendering", "run `labline docs`")
        print(f"up to date: {', '.join(str(p) for p in rendered)}")
        return
    write(config_dir(), Path(args.output))
    for path, text in rendered.items():
        if path != Path(args.output) and path.read_text() != text:
            path.write_text(text)
    print(f"wrote {', '.join(str(p) for p in rendered)}")


def _measure(args: argparse.Namespace) -> None:
    from labline.studies.results import measure

    print(f"wrote {measure(workspace_root(), args.row)}")


def _runs(args: argparse.Namespace) -> None:
    from labline.studies.catalogue import list_runs, print_runs
    from labline.tracking.store import open_store

    store = open_store()
    rows = list_runs(store, args.experiment, args.status, args.tag, args.filter, args.limit)
    if args.ids:
        print("\n".join(row.run_id for row in rows))
    else:
        print_runs(rows, store)


def _plots_html(args: argparse.Namespace) -> None:
    from labline.reporting.dvc_html import write_template

    print(f"wrote {write_template(workspace_root())}")


def _ensemble(args: argparse.Namespace) -> None:
    from labline.studies.ensemble import run_ensemble

    result = run_ensemble(args.run_ids, args.filter, args.method, args.metric, workspace_root(), run_name=args.run_name,
                          weights=args.weights)
    print(f"ensemble run {result['run_id']}: {result['headline']} {result[result['headline']]:.4f}")


def _distill_compare(args: argparse.Namespace) -> None:
    from labline.studies.distill_compare import compare_study

    print(compare_study(args.teacher, args.scratch, args.student, args.seeds, Path(args.output), Path(args.table),
                        workspace_root()))


def _lab(args: argparse.Namespace) -> None:
    from labline.core.paths import project_root
    from labline.lab.cli import lab

    lab(args.action, args.services, Path(args.dir) if args.dir else project_root() / ".labline" / "lab", args.port_offset)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labline", description="Declarative experiment pipelines for DL research.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train an experiment: labline train [GROUP=OPTION] [key=value] (Hydra; --help lists groups)",
                   add_help=False)
    sub.add_parser("ablate", help="run an ablation study: labline ablate ablation=NAME [overrides]", add_help=False)
    sub.add_parser("report", help="rebuild an ablation table from MLflow: labline report ablation=NAME", add_help=False)
    stage = sub.add_parser("stage", help="run one DVC pipeline stage from params.yaml")
    stage.add_argument("name", choices=["prepare", "split", "preprocess", "train", "evaluate"])
    stage.add_argument("--params", default="params.yaml")
    stage.set_defaults(func=_stage)
    params = sub.add_parser("params", help="compose conf/ (with overrides) into params.yaml for `dvc repro`")
    params.add_argument("overrides", nargs="*")
    params.add_argument("--output", default="params.yaml")
    params.add_argument("--check", action="store_true", help="exit 1 if the file differs from conf/")
    params.set_defaults(func=_params)
    metrics = sub.add_parser("metrics", help="print a metrics JSON as a table")
    metrics.add_argument("path", nargs="?", default="reports/metrics.json")
    metrics.set_defaults(func=_metrics)
    rep = sub.add_parser("reproduce", help="re-run a recorded MLflow run and compare its metrics")
    rep.add_argument("run_id")
    rep.add_argument("--allow-drift", action="store_true", help="run even if code or data differ (recorded on the new run)")
    rep.set_defaults(func=_reproduce)
    ev = sub.add_parser("evaluate", help="score a finished run on shifted test sets, without retraining: labline evaluate "
                                         "RUN_ID shift=corruptions (docs/distribution_shift.md)")
    ev.add_argument("run_id", help="a finished training run (`labline runs`)")
    ev.add_argument("shift", nargs="+", metavar="shift=...",
                    help="shift=corruptions | label | cross_dataset, or a list shift=[corruptions,label]; "
                         "shift.<family>.<key>=value overrides (conf/shift/)")
    ev.add_argument("--output", help="write the metrics as JSON here, e.g. for a DVC metrics file (default: "
                                     "outputs/shift-<run>-<time>/metrics.json, beside the tables and heat-maps)")
    ev.set_defaults(func=_evaluate)
    docs = sub.add_parser("docs", help="regenerate docs/components.md from conf/ and the results tables from "
                                       "pipelines/results/metrics (stale rows marked)")
    docs.add_argument("--output", default="docs/components.md")
    docs.add_argument("--check", action="store_true", help="exit 2 if a generated file differs from a fresh rendering")
    docs.set_defaults(func=_docs)
    measure = sub.add_parser("measure", help="measure one row of labline's results tables (pipelines/results; what "
                                             "`make results` runs per row)")
    measure.add_argument("row", help="a row of pipelines/results/results.yaml")
    measure.set_defaults(func=_measure)
    runs = sub.add_parser("runs", help="list recent runs with their ids (what ensemble, reproduce and backbone.weights take)")
    runs.add_argument("--experiment", help="only this MLflow experiment (default: all)")
    runs.add_argument("--status", help="RUNNING, FINISHED, FAILED or KILLED")
    runs.add_argument("--tag", action="append", default=[], help="KEY=VALUE, e.g. --tag dataset=digits (repeatable)")
    runs.add_argument("--filter", help="any MLflow search filter, e.g. \"metrics.`test/acc` > 0.98\"")
    runs.add_argument("--limit", type=int, default=20, help="newest N runs (default 20)")
    runs.add_argument("--ids", action="store_true", help="print only the run ids, one per line")
    runs.set_defaults(func=_runs)
    html = sub.add_parser("plots-html", help="write the offline page `dvc plots show` uses (Vega bundled, no CDN)")
    html.set_defaults(func=_plots_html)
    ens = sub.add_parser("ensemble", help="combine the predictions of finished runs into an ensemble run")
    ens.add_argument("run_ids", nargs="*", help="member run ids")
    ens.add_argument("--filter", help="MLflow search filter selecting members, e.g. \"tags.dataset = 'digits'\"")
    ens.add_argument("--method", default="average", help="vote | average | weighted | rank (default: average)")
    ens.add_argument("--metric", help="validation metric weighing members for --method weighted, e.g. val/acc")
    ens.add_argument("--weights", default="metric",
                     help="for --method weighted: metric (each member's --metric) | val (fitted on the members' validation "
                          "predictions, minimising log loss)")
    ens.add_argument("--run-name", help="name of the ensemble's MLflow run")
    ens.set_defaults(func=_ensemble)
    dc = sub.add_parser("distill-compare", help="table a distillation study: teacher, student from scratch, distilled student")
    for role in ("teacher", "scratch", "student"):
        dc.add_argument(f"--{role}", required=True, help=f"params file of the {role} run(s); {{seed}} stands for each seed")
    dc.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds averaged over (default: 0)")
    dc.add_argument("--output", default="reports/compare.json", help="comparison as JSON (a DVC metrics file)")
    dc.add_argument("--table", default="reports/compare.md", help="comparison as a Markdown table")
    dc.set_defaults(func=_distill_compare)
    lab = sub.add_parser("lab", help="start/stop PostgreSQL, an MLflow server, SLURM and S3 on 127.0.0.1 (docs/cluster.md)")
    lab.add_argument("action", choices=["up", "down", "env"])
    lab.add_argument("services", nargs="*", help="postgres mlflow slurm s3 (default: every one this machine can run)")
    lab.add_argument("--dir", help="state folder (default: <project>/.labline/lab)")
    lab.add_argument("--port-offset", type=int, default=0, help="added to every default port (15432 postgres, "
                     "15000 mlflow, 16817/16818 slurm, 18330-18333 s3)")
    lab.set_defaults(func=_lab)
    return parser


def _dispatch(argv: Sequence[str]) -> None:
    handlers: dict[str, Callable[[Sequence[str]], None]] = {"train": _train, "ablate": _ablate, "report": _report}
    if argv and argv[0] in handlers:
        handlers[argv[0]](argv[1:])
        return
    args = _parser().parse_args(argv)
    args.func(args)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from labline.reporting.console import quiet_libraries

    quiet_libraries(verbose="verbose=true" in argv)  # before any library is imported: MLflow reads its level then
    from labline.runs.launched import run_as_rank

    try:
        run_as_rank(lambda: _dispatch(argv))  # under srun/torchrun, the other ranks follow rank zero's trainings
    except ConfigError as err:
        exit_with(err)
    except Interrupted as stop:
        print(f"labline: {stop}; checkpoint kept, run the same command to resume", file=sys.stderr)
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
