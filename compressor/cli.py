"""`compressor` command line of the library: run jobs, manage the model store, list recipes, try an artifact.

The service adds its commands (serve, worker, submit, …) on top of `build_parser()` in `api/cli.py`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from pydantic import ValidationError

from compressor.spec import JobSpec, load_recipe, ready_made_recipes

RESUME_DIR = "resume"  # OUT/resume: the job (job.json) and its checkpoints while it has not succeeded
JOB_FILE = "job.json"


def _validation_message(err: ValidationError, prefix: str) -> str:
    lines = []
    for e in err.errors():
        parts = [str(p) for p in (prefix, *e["loc"]) if p != ""]
        loc = ".".join(p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1])  # drop the stage tag repeat
        lines.append(f"  {loc}: {e['msg']}")
    return "invalid recipe:\n" + "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    try:
        spec, out_dir = _job_to_run(args)
    except ValidationError as e:
        console.print(f"[red]{_validation_message(e, 'recipe')}")
        return 2
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]{e}")
        return 2

    from compressor.models.store import UnknownModelError
    from compressor.pipeline import run
    from compressor.progress_display import ProgressDisplay

    resume_dir = out_dir / RESUME_DIR
    try:
        with ProgressDisplay(console, verbose=args.verbose) as display:
            result = run(spec, out_dir, progress=display, resume_dir=resume_dir, device=args.device)
    except (UnknownModelError, ValueError) as e:
        console.print(f"[red]{e}")
        return 2
    shutil.rmtree(resume_dir, ignore_errors=True)
    report = result.report_model
    out = Console()
    out.print("\n[bold]perplexity[/]  (original → compressed)")
    for ds, value in report.perplexity.get("compressed", {}).items():
        orig = report.perplexity.get("original", {}).get(ds)
        kl = report.kl.get(ds)
        out.print(f"  {ds:5s} {orig:8.3f} → {value:8.3f}" if orig else f"  {ds:5s} {value:8.3f}",
                  f"   KL {kl:.4f}" if kl is not None else "")
    size = report.size
    if size.bits_per_weight:
        out.print(f"bits per weight (decoder linears): {size.bits_per_weight:.3f}")
    if size.checkpoint_bytes:
        out.print(f"checkpoint: {size.checkpoint_bytes / 1e6:.1f} MB (original in bf16: {size.original_bytes / 1e6:.1f} MB)")
    weights = result.out_dir / "checkpoint" / "model.safetensors"
    if weights.is_file():
        from compressor.export.format import sha256_file

        out.print(f"model.safetensors sha256 {sha256_file(weights)}", soft_wrap=True)  # one line, for scripts to compare
    if report.resume is not None and report.resume.resumed_from:
        out.print(f"resumed at {report.resume.resumed_from} (attempt {report.resume.attempt}); "
                  f"{report.resume.seconds_saved:.1f} s of earlier work reused")
    out.print(f"time {report.seconds:.1f} s, peak RSS {report.peak_rss_mb:.0f} MB")
    out.print(f"artifacts: {result.out_dir.resolve()}  (report.html, report.json, checkpoint/)")
    return 0


def _job_to_run(args: argparse.Namespace) -> tuple[JobSpec, Path]:
    """The job of `run`: from --model/--recipe (a fresh start in --out), or the one an interrupted run left in --resume."""
    if args.resume is not None:
        if args.model or args.recipe or args.out:
            raise ValueError("--resume OUT takes the job from OUT; do not combine it with --model, --recipe or --out")
        out_dir = Path(args.resume)
        job_file = out_dir / RESUME_DIR / JOB_FILE
        if not job_file.is_file():
            raise ValueError(f"--resume {out_dir}: no interrupted job there ({job_file} is missing); "
                             "start one with --model, --recipe and --out")
        return JobSpec.model_validate_json(job_file.read_text()), out_dir
    missing = [flag for flag, value in (("--model", args.model), ("--recipe", args.recipe), ("--out", args.out)) if not value]
    if missing:
        raise ValueError(f"run needs {', '.join(missing)} (or --resume OUT to continue an interrupted run)")
    spec = JobSpec(model=args.model, recipe=load_recipe(args.recipe))
    out_dir = Path(args.out)
    shutil.rmtree(out_dir / RESUME_DIR, ignore_errors=True)  # a new run never reuses an older job's state
    (out_dir / RESUME_DIR).mkdir(parents=True)
    (out_dir / RESUME_DIR / JOB_FILE).write_text(spec.model_dump_json(indent=1))
    return spec, out_dir


def cmd_models(args: argparse.Namespace) -> int:
    from compressor.models.store import ModelStore

    store = ModelStore()
    if args.action == "import":
        return _import_model(store, args)
    if args.action == "show":
        return _show_model(store, args.model)
    if args.action == "delete":
        from compressor.models.store import UnknownModelError

        try:
            store.delete(args.model)
        except UnknownModelError as e:
            print(e, file=sys.stderr)
            return 2
        print(f"deleted {args.model}", file=sys.stderr)
        return 0
    for info in store.list():
        print(json.dumps({k: v for k, v in info.items() if k != "files"}))
    if not store.names():
        print("no models in the store; run `compressor models import`", file=sys.stderr)
    return 0


def _import_model(store, args: argparse.Namespace) -> int:  # noqa: ANN001
    """No source: the bundled model, as before. A source: a folder, .gguf, hf:// or s3://."""
    from rich.console import Console

    from compressor.models.sources import SourceError
    from compressor.models.store import ModelExistsError
    from compressor.progress import JobCancelled
    from compressor.progress_display import ProgressDisplay

    if args.source is None:
        name = args.name or "smollm2-135m"
        path = store.import_bundled(name, overwrite=args.force)
        print(f"{name}: {path}")
        return 0
    console = Console(stderr=True)
    try:
        with ProgressDisplay(console) as display:
            path = store.import_source(args.source, args.name, args.revision, link=args.link, overwrite=args.force,
                                       progress=display)
    except (SourceError, ModelExistsError) as e:
        console.print(f"[red]{e}", highlight=False)
        return 2
    except (KeyboardInterrupt, JobCancelled):
        console.print("[red]import interrupted; nothing was added")
        return 130
    info = json.loads((path / "store.json").read_text())
    print(f"{info['name']}: {path} ({info['architecture']}, {info['params'] / 1e6:.1f}M parameters, {info['dtype']}, "
          f"{len(info['files'])} files, {info['total_bytes'] / 1e6:.1f} MB)")
    return 0


def _show_model(store, name: str) -> int:  # noqa: ANN001
    """store.json and what the library can do with the model (`compatibility.model_support`)."""
    from compressor.models.compatibility import model_support
    from compressor.models.store import UnknownModelError

    try:
        info, config = store.info(name), store.config(name)
    except UnknownModelError as e:
        print(e, file=sys.stderr)
        return 2
    print(json.dumps({**info, "support": model_support(config).model_dump()}, indent=2))
    return 0


def cmd_recipes(_args: argparse.Namespace) -> int:
    for name, recipe in ready_made_recipes().items():
        stages = ", ".join(cfg.stage for cfg in recipe.stage_configs())
        print(f"{name:28s} {stages}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Greedy reply of an exported artifact (loaded with QuantLinear layers) to one chat prompt."""
    from compressor.inference import UnsupportedArtifactError, generate_reply, load, load_tokenizer

    try:
        model = load(args.artifact)
    except (UnsupportedArtifactError, FileNotFoundError) as e:
        print(f"cannot load {args.artifact}: {e}", file=sys.stderr)
        return 2
    print(generate_reply(model, load_tokenizer(args.artifact), args.prompt, args.max_new_tokens))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compressor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a compression job")
    p.add_argument("--model", help="model name in the store, e.g. smollm2-135m")
    p.add_argument("--recipe", help="recipe file (YAML/JSON) or a ready-made recipe name")
    p.add_argument("--out", help="output folder for the checkpoint and report (resume state in OUT/resume until it succeeds)")
    p.add_argument("--resume", metavar="OUT", help="continue the interrupted run whose --out was OUT, from its last checkpoint")
    p.add_argument("--device", help="where the job runs: auto (the GPU when CUDA is present, else cpu), cpu, cuda, cuda:N "
                                    "(default: $COMPRESSOR_DEVICE, else auto)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("models", help="the model store: import, list, show, delete")
    models = p.add_subparsers(dest="action", required=True)
    m = models.add_parser("import", help="import a model (no source: the bundled SmolLM2-135M)")
    m.add_argument("source", nargs="?", help="a HF folder, a .gguf file, hf://org/model[@revision] or "
                                             "s3://bucket/prefix[?endpoint_url=…]; none = the bundled model")
    m.add_argument("--name", help="store name (default: smollm2-135m for the bundled model, else from the source)")
    m.add_argument("--revision", help="hf:// only: branch, tag or commit")
    m.add_argument("--link", action="store_true", help="hard-link local files instead of copying them (same filesystem)")
    m.add_argument("--force", action="store_true", help="re-import even if present")
    m.set_defaults(func=cmd_models)
    models.add_parser("list", help="the models in the store, one JSON line each").set_defaults(func=cmd_models)
    for action, text in (("show", "a model's store.json and which methods apply"), ("delete", "remove a model")):
        m = models.add_parser(action, help=text)
        m.add_argument("model", help="a store name")
        m.set_defaults(func=cmd_models)

    p = sub.add_parser("recipes", help="list ready-made recipes")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("generate", help="greedy reply of an exported artifact to a chat prompt")
    p.add_argument("--artifact", required=True, type=Path, help="checkpoint folder (config.json, model.safetensors, manifest.json)")
    p.add_argument("--prompt", required=True, help="user message, wrapped in the tokenizer's chat template")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command; `parser` lets the service's CLI (api/cli.py) add its commands to the library's."""
    args = (parser or build_parser()).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
