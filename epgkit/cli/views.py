"""``epgkit render``, ``envs show``, ``list`` and ``analyze``: looking at losses, policies, task
families and what is registered."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from epgkit.cli.app import Bindings, Debug, Source, app, cannot, physics_only, user_errors


@app.command()
def render(
    source: Source,
    env: Annotated[str | None, typer.Option(help="Another env id with the same spaces.")] = None,
    out: Annotated[str, typer.Option(help="GIF to write.")] = "policy.gif",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the held-out task.")] = 0,
    steps: Annotated[int | None, typer.Option(help="Env steps U of training.")] = None,
    max_steps: Annotated[int, typer.Option(min=1, help="Longest episode to render.")] = 300,
    width: Annotated[
        int | None, typer.Option(min=16, help="Width of the GIF in pixels (default: the env's).")
    ] = None,
    binding: Bindings = None,
    debug: Debug = False,
) -> None:
    """Train a fresh policy with the loss on a held-out task, then render an episode of it."""
    from epgkit.method.inner_loop import checked, run_batch
    from epgkit.run import train as tt
    from epgkit.run.lock import check_outside_runs
    from epgkit.run.paths import check_file
    from epgkit.run.sources import load_source
    from epgkit.tools.envshow import mujoco_gl_problem
    from epgkit.tools.render import render_episode, render_problem

    with user_errors(debug):
        check_file(out, "--out", (".gif", ".webp", ".png"))  # what Pillow animates
        check_outside_runs(Path(out).parent, "--out")
        mujoco_gl_problem()  # before the env is built: a broken GL backend breaks `import mujoco`
        source_ = load_source(source)
        loops = tt.methods(tt.build(source_, binding or []), [], env, steps)
        tt.check_fits(loops[tt.LEARNED], source_)
        inner = loops[tt.LEARNED]
        (job,) = tt.test_jobs(source_.phi, 1, seed)
        # Checked before training, which may take long, to produce a GIF that cannot be made.
        if problem := render_problem(inner, job.task_seed):
            cannot(problem)
        ((result,),) = checked([run_batch(inner, [job], keep_policy=True)])
        episode = render_episode(inner, result.policy, job.task_seed, out, max_steps, width=width)
    typer.echo(
        f"trained on task {job.task_seed} of {inner.env_id} for {inner.steps:,} steps: final "
        f"return {result.fitness:.2f}; rendered episode {episode.describe()}"
    )
    if episode.reason:
        cannot(episode.reason)
    typer.echo(f"wrote {out}")


envs_app = typer.Typer(no_args_is_help=True, help="Look at the task families.")
app.add_typer(envs_app, name="envs")


@envs_app.command("show")
def envs_show(
    env_id: Annotated[str, typer.Argument(help="A registered env id, e.g. epgkit/RandomHopper-v0")],
    tasks: Annotated[int, typer.Option(min=1, help="How many tasks to sample.")] = 4,
    out: Annotated[str | None, typer.Option(help="PNG to write.")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the sampled tasks.")] = 0,
    debug: Debug = False,
) -> None:
    """Render one frame per sampled task into a PNG and print each task's parameters."""
    import json

    from epgkit.envs.ids import takes_task_seed
    from epgkit.run.lock import check_outside_runs
    from epgkit.run.paths import check_file, figure_suffixes
    from epgkit.tools.envshow import show_tasks

    with user_errors(debug):
        target = Path(out or f"{env_id.replace('/', '_').replace(':', '_')}_tasks.png")
        check_file(target, "--out", figure_suffixes())
        check_outside_runs(target.parent, "--out")
        task_list, message = show_tasks(env_id, tasks, target, seed=seed)
        family = takes_task_seed(env_id)
    for task in task_list:
        typer.echo(json.dumps(task))
    if not family:
        typer.echo(f"{env_id} is not a task family (it takes no task_seed): each frame is a reset "
                   "with another seed")  # fmt: skip
    typer.echo(message if message else f"wrote {target}")


LIST_KINDS = {"losses": "loss", "policies": "policy", "strategies": "strategy",
              "clusters": "cluster"}  # fmt: skip


@app.command("list")
def list_(
    what: Annotated[
        str | None,
        typer.Argument(
            help="losses, policies, strategies, clusters, envs, configs or zoo (default: all)."
        ),
    ] = None,
    modules: Annotated[
        list[str] | None,
        typer.Option(
            "--import", help="Import this module first, to list what it registers (repeatable)."
        ),
    ] = None,
) -> None:
    """List the registered components, environments and shipped configs."""
    import importlib

    import gymnasium as gym

    from epgkit.components import registered
    from epgkit.errors import ConfigError
    from epgkit.method.user_code import describe
    from epgkit.run.config import available

    kinds = ["losses", "policies", "strategies", "clusters", "envs", "configs", "zoo"]
    before = set(gym.registry)  # what the user's modules add is listed with epgkit's envs
    with user_errors(False):
        if what is not None and what not in kinds:
            raise ConfigError(f"cannot list {what!r}; choose one of {', '.join(kinds)}")
        for module in modules or []:
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise ConfigError(f"--import {module}: cannot be imported ({err})") from None
            except Exception as err:  # noqa: BLE001  (whatever the user's module raises)
                raise ConfigError(
                    f"--import {module}: the module raised an error when imported: {describe(err)}"
                ) from None
    for kind in [what] if what else kinds:
        typer.echo(f"{kind}:")
        if kind in LIST_KINDS:
            for name, obj in registered(LIST_KINDS[kind]).items():
                doc = (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""
                typer.echo(f"  {name:<16} {doc}")
        elif kind == "envs":
            from epgkit.envs import registered as envs

            for env_id in sorted(set(envs()) | (set(gym.registry) - before)):
                entry = gym.spec(env_id).entry_point
                if callable(entry):  # registered with the class itself
                    entry = f"{entry.__module__}:{entry.__qualname__}"
                typer.echo(f"  {env_id:<32} {entry}")
        elif kind == "zoo":
            from epgkit.run.zoo import entries

            for name, entry in entries().items():
                typer.echo(f"  zoo:{name:<24} {entry['env_id']}  {entry['summary']}")
        else:
            for name in available():
                typer.echo(f"  {name}")


analyze_app = typer.Typer(
    no_args_is_help=True,
    help="Look inside a learned loss during test-time training (Section 4.3, Appendix B).",
)
app.add_typer(analyze_app, name="analyze")
_Source = Source
_Env = Annotated[str | None, typer.Option(help="Test on another env id (same spaces).")]
_Runs = Annotated[int, typer.Option(min=1, help="Held-out tasks, one inner loop each.")]
_Steps = Annotated[int | None, typer.Option(help="Env steps U of each run.")]
_Out = Annotated[
    str | None,
    typer.Option(help="Output folder (default: RUN_DIR/analyze/<time> or runs/analyze/<time>)."),
]
_Seed = Annotated[
    int, typer.Option(min=0, help="Seed of the held-out tasks and runs (as in train).")
]


def _analyze(kind: str, source: str, env: str | None, runs: int, steps: int | None,
             out: str | None, seed: int, bindings: list[str], debug: bool) -> None:  # fmt: skip
    import torch

    from epgkit.run.train_launch import provenance
    from epgkit.tools import analyze

    torch.set_num_threads(1)
    with user_errors(debug):
        physics_only()
        study = analyze.prepare(kind, source, env, runs, steps, out, seed, bindings)
        typer.echo(f"epgkit: {kind} of {study.source.path}{provenance(study.source.meta)} on "
                   f"{study.learned.env_id}: {runs} held-out task{'s' * (runs != 1)}, "
                   f"U={study.learned.steps} "
                   f"steps each → {study.out}")  # fmt: skip
        data = analyze.run(kind, study)
    typer.echo(analyze.headline(kind, data))
    typer.echo(f"wrote {study.out / (kind + '.png')} and {kind}.json")


@analyze_app.command("sensitivity")
def analyze_sensitivity(source: _Source, env: _Env = None, runs: _Runs = 3, steps: _Steps = None,
                        out: _Out = None, seed: _Seed = 0, binding: Bindings = None,
                        debug: Debug = False) -> None:  # fmt: skip
    """‖∂L/∂x‖ of the loss per input and row of its window, as a heatmap (Figure 21)."""
    _analyze("sensitivity", source, env, runs, steps, out, seed, binding or [], debug)


@analyze_app.command("gradients")
def analyze_gradients(source: _Source, env: _Env = None, runs: _Runs = 3, steps: _Steps = None,
                      out: _Out = None, seed: _Seed = 0, binding: Bindings = None,
                      debug: Debug = False) -> None:  # fmt: skip
    """Spearman's ρ between the loss's and PPO's policy gradients, per update."""
    _analyze("gradients", source, env, runs, steps, out, seed, binding or [], debug)


@analyze_app.command("kl")
def analyze_kl(source: _Source, env: _Env = None, runs: _Runs = 3, steps: _Steps = None,
               out: _Out = None, seed: _Seed = 0, binding: Bindings = None,
               debug: Debug = False) -> None:  # fmt: skip
    """KL per update under the loss, PPO and the initial loss φ₀ (Figures 16, 22)."""
    _analyze("kl", source, env, runs, steps, out, seed, binding or [], debug)
