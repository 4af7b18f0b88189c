"""``spadepis check``: validate a run config and print its plan, without running."""

from __future__ import annotations

import sys

from ._pipeline_args import load_config_args, prepare_inputs_for


def _refuse(heading: str, problems: list[str]) -> int:
    """Print ``heading`` and one line per problem on stderr; exit status 1."""
    print(heading, file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    return 1


def _cmd_check(args) -> int:
    from ..pipeline.preflight import validate_config
    from ..pipeline.plan import make_plan

    cfg = load_config_args(args)
    prepare_inputs_for(cfg)
    problems = validate_config(cfg)
    from ..pipeline.preflight import label_remap_report

    for line in label_remap_report(cfg):  # dataset.label_remap: the ids met in a sample of the maps, and their fate
        print(line)
    if problems:
        return _refuse(f"{args.config}: {len(problems)} problem(s); fix them before running:", problems)
    plan = make_plan(cfg)
    from ..pipeline.plan import renamed_inputs, storage_name_problems

    problems = storage_name_problems(plan, cfg.run_uri)
    if problems:
        return _refuse(f"{args.config}: {len(problems)} output name(s) cannot be stored:", problems)
    renamed = renamed_inputs(plan)
    if renamed:
        shown = "; ".join(f"{name!r} -> {sid!r}" for name, sid in renamed[:5])
        print(f"note: {len(renamed)} file name(s) cannot be stored as they are (characters a file name cannot "
              f"safely hold, or longer than the id limit) and get a readable id with a short hash: {shown}"
              + (" ..." if len(renamed) > 5 else ""))
    from ..pipeline.storage import RunStorage

    try:
        conditional = RunStorage(cfg.run_uri).probe_conditional_write()
    except Exception as exc:  # noqa: BLE001 - the write check of validate_config reports storage failures
        conditional = None
        print(f"note: could not probe conditional writes under {cfg.run_uri} ({type(exc).__name__}: {exc})")
    if conditional is False:
        print(f"note: the output store of {cfg.run_uri} has no conditional write (exclusive create / If-None-Match); "
              "the first commit of a shard and the lease takeover are check-then-write there: run one run per "
              "run folder at a time, and no duplicate shard attempts (Dask: no speculative re-runs)")
    from ..data.images import oversized_images

    for uri, pixels in oversized_images([st.uri for st in plan.styles[:1000]], cfg.max_image_pixels):
        print(f"note: style {uri} is {pixels / 1e6:.0f} megapixels, above max_image_pixels "
              f"({cfg.max_image_pixels / 1e6:.0f}); it will be refused (its pairs become error rows): downscale or "
              "remove it, or raise max_image_pixels")
    change = _change_in_run_folder(cfg, plan)
    print(
        f"{args.config}: OK. run {plan.run_id} -> {cfg.run_uri}" + (f" (existing run: {change})" if change else "") + "\n"
        f"  {len(plan.sources)} sources, {len(plan.styles)} styles, {plan.n_samples} outputs in {len(plan.shards)} shard(s) "
        f"of {cfg.shard_size}; models: {cfg.models.synth_checkpoint if not cfg.stylize_only else 'stylize-only'}, "
        f"{cfg.models.stylizer}, smoothing {cfg.models.smoothing}; runner {cfg.runner.kind} x{cfg.runner.max_concurrency}"
    )
    return 0


def _change_in_run_folder(cfg, plan) -> str | None:
    """What a run would find in the run folder (new and gone sources), or ``None`` when it holds no run yet."""
    from ..pipeline.plan import committed_sources
    from ..pipeline.storage import RunStorage

    storage = RunStorage(cfg.run_uri)
    try:
        if not storage.exists("run.json"):
            return None
        return plan.remaining(committed_sources(storage)).change.describe()
    except Exception as exc:  # noqa: BLE001 - a read problem here is the run's to report
        return f"could not read what it holds ({type(exc).__name__})"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check", help="validate a config (inputs, weights, output) without running",
        description="Check a run config without running it: every field, the inputs (label maps, instance maps, "
        "photos, styles), the weights (files exist and fit the preset), the device, the runner and that the output "
        "is writable. Prints the plan (sources, styles, shards) when all is well; exit status 1 with every problem "
        "otherwise.",
    )
    p.add_argument("config", help="YAML run config, e.g. configs/coco.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. --set dataset.limit=10 (repeatable)")
    p.set_defaults(func=_cmd_check)
