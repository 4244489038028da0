"""Where a speedrun's pretraining settings come from: the presets' defaults, or `--from research/TAG`, the
model/optim/train settings that the research branch's best commit kept (its research/experiment.toml), read
from the research repository's ledger and git history the way `nanowhale research promote` reads them.

`research_origin` is the one place the speedrun touches the research kit."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TAKEN_SECTIONS = ("model", "optim", "train")  # what a research branch decides; data, eval and runs stay the speedrun's


@dataclass
class Origin:
    kind: str                               # "preset" or "research"
    branch: str = ""                        # research/TAG
    commit: str = ""                        # the best commit's full sha
    subject: str = ""                       # its commit message's first line
    repo: str = ""
    settings: dict = field(default_factory=dict)   # {"model": {...}, "optim": {...}, "train": {...}}
    code_changes: list = field(default_factory=list)  # paths outside research/ the branch changed

    def describe(self, preset: str) -> str:
        if self.kind == "preset":
            return f"the `{preset}` preset's defaults"
        code = (f"; its code changes ({', '.join(self.code_changes)}) are the code this speedrun runs"
                if self.code_changes else "")
        return (f"`{self.branch}` best commit {self.commit[:12]} (\"{self.subject}\") in {self.repo}: "
                f"research/experiment.toml's {', '.join(k for k in TAKEN_SECTIONS if k in self.settings) or 'nothing'}"
                f" over the `{preset}` preset{code}")

    def to_dict(self) -> dict:
        return asdict(self)


def research_origin(ref: str | None, repo: str | Path = ".") -> Origin:
    """The settings of research branch `ref` ("research/TAG") at its best commit; the presets' when ref is None.

    The branch's best commit is the ledger's last kept experiment (the start commit when nothing was kept).
    When that commit changed code (not only research/), the speedrun must run that code: the nanowhale being
    imported must be the repository's, with those paths as the commit has them; otherwise ValueError says how."""
    if ref is None:
        return Origin("preset")
    from nanowhale.research.context import BRANCH_PREFIX, EXPERIMENT_CONFIG, RESEARCH_DIR, Context

    if not ref.startswith(BRANCH_PREFIX) or ref == BRANCH_PREFIX:
        raise ValueError(f"--from {ref!r}: expected {BRANCH_PREFIX}TAG (a research branch)")
    ctx = Context.open(repo, tag=ref[len(BRANCH_PREFIX):])
    if not ctx.git.branch_exists(ref):
        raise ValueError(f"--from {ref}: no such branch in {ctx.repo}")
    best = ctx.best_commit()
    text = ctx.git("show", f"{best}:{EXPERIMENT_CONFIG}", check=False)
    try:
        exp = tomllib.loads(text) if text else {}
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--from {ref}: {EXPERIMENT_CONFIG} at {best[:12]} is not valid TOML ({e})") from None
    settings = {k: exp[k] for k in TAKEN_SECTIONS if k in exp}
    changed = [p for p in ctx.git("diff", "--name-only", ctx.s["start_commit"], best, "--", ".",
                                  f":(exclude){RESEARCH_DIR}").splitlines() if p]
    if changed:
        _check_running_code(ctx, best, changed, ref)
    subject = ctx.git("log", "-1", "--format=%s", best).strip()
    return Origin("research", ref, best, subject, str(ctx.repo), settings, changed)


def _check_running_code(ctx, commit: str, paths: list[str], ref: str) -> None:
    import nanowhale

    here = Path(nanowhale.__file__).resolve()
    differ = ctx.git("diff", "--name-only", commit, "--", *paths).splitlines()
    if not here.is_relative_to(ctx.repo.resolve()) or differ:
        raise ValueError(
            f"--from {ref}: its best commit {commit[:12]} changed code ({', '.join(paths)}), and the nanowhale "
            f"running here ({here.parent}) is not that code. Run the speedrun from the research repository "
            f"with the commit checked out and built: cd {ctx.repo} && git checkout {commit[:12]} && pip install "
            "--no-build-isolation -Cbuild-dir=build/dev -e .")


__all__ = ["Origin", "TAKEN_SECTIONS", "research_origin"]
