"""Several agents on one research tag: `nanowhale research join | claim | sync | merge` and the swarm's part
of `run` (agent_recipes/swarm.md).

- Each agent works in its own git worktree on branch research/TAG/NAME; all share one ledger (a SQLite file
  on one machine, PostgreSQL across machines), and the code of kept experiments travels through one git
  remote (a bare repository path or URL), branch research/TAG/NAME per agent.
- The global best (the tag's last keep, whoever made it) is the reference every agent must beat: `run`
  starts only from it, and a result is kept only if the best did not move while it ran (checked and
  recorded in one ledger transaction, so two agents cannot both keep from the same parent). A result that
  beat the best it started from after another agent kept is `stale`: `sync` re-applies it on the new best
  for a re-run, `merge` re-runs the stale winners of every agent best-first.
- Claims say what an agent is about to try (one open claim per agent: a new one replaces it), under a
  lease: the agent's commands renew it; it expires when
  they stop for `lease_seconds`, or at once when the agent's process (NANOWHALE_AGENT_PID) is gone on this
  machine. A claim like an open claim or a finished experiment is flagged with that row's id.
- Runs take a slot from a machine-wide limit (flock on files in a shared directory; one slot per GPU, or
  per `threads` CPU cores), so agents queue instead of slowing each other's measurements down.
"""

from __future__ import annotations

import difflib
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from nanowhale.research.commands import block
from nanowhale.research.context import (BRANCH_PREFIX, EXPERIMENT_CONFIG, LEDGER_POINTER, RESEARCH_DIR, Context,
                                        ledger_location)
from nanowhale.research.gitops import Git
from nanowhale.research.ledger import Ledger, now
from nanowhale.research.ledger_db import is_postgres

DEFAULT_LEASE_SECONDS = 1800.0   # an agent silent this long has lost its claims
SIMILAR_DESCRIPTION = 0.75       # word-level difflib ratio (stopwords out) that counts as near-identical
SLOT_POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 60.0         # how often an agent waiting for a slot renews its claims
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def swarm_settings(led: Ledger, tag: str) -> dict | None:
    return led.get(f"swarm/{tag}")


def event(ctx: Context, kind: str, **detail) -> int:
    return ctx.ledger.insert("events", {"agent": ctx.agent, "tag": ctx.tag, "at": now(), "kind": kind,
                                        "detail": detail})


# ---- join ----
def join(tag: str, agent: str, directory: str | None = None, remote: str | None = None,
         ledger_url: str | None = None, slots: int = 0, build: bool = True, path=".", log=print) -> int:
    """A worktree and branch research/TAG/AGENT at the global best, pointed at the shared ledger."""
    if not NAME.match(agent) or agent == "start":
        raise ValueError(f"--agent {agent!r}: letters, digits, '-', '_', '.' ('start' is the tag's own branch)")
    if slots < 0:
        raise ValueError(f"--slots must be >= 0, got {slots}")
    repo = Git.toplevel(path)
    git = Git(repo)
    if ledger_url and not is_postgres(ledger_url):
        ledger_url = str(Path(ledger_url).resolve())
    where = ledger_url or ledger_location(repo)
    led = Ledger.open(where, create=False)
    s = led.get(f"tag/{tag}")
    if s is None:
        raise ValueError(f"research tag {tag!r} is not in the ledger {led.where} (`nanowhale research init {tag}` first)")
    sw = swarm_settings(led, tag)
    if sw is None:
        if remote is None and is_postgres(where):
            raise ValueError("a PostgreSQL ledger is shared across machines: give --remote, a git URL every agent reaches")
        remote = remote or str(Path(where).parent / "swarm" / f"{tag}.git")
        if "://" not in remote and not Path(remote).exists():
            Path(remote).parent.mkdir(parents=True, exist_ok=True)
            Git(Path(remote).parent)("init", "-q", "--bare", str(Path(remote).resolve()))
        git("push", "-q", remote, f"{_best_commit(led, tag, s)}:refs/heads/{BRANCH_PREFIX}{tag}/start")
        sw = {"remote": remote, "slots": slots, "created_at": now()}
        led.set(**{f"swarm/{tag}": sw})
    elif remote and remote != sw["remote"]:
        raise ValueError(f"tag {tag} shares code through {sw['remote']}, not {remote}")
    if git.branch_exists(BRANCH_PREFIX + tag):  # git cannot hold both research/TAG and research/TAG/NAME
        git("branch", "-m", BRANCH_PREFIX + tag, f"{BRANCH_PREFIX}{tag}/start")
    fetch(git, sw["remote"], tag)
    branch = f"{BRANCH_PREFIX}{tag}/{agent}"
    wt = Path(directory).resolve() if directory else repo.parent / f"{repo.name}-{tag}-{agent}"
    if git.branch_exists(branch):
        raise ValueError(f"agent {agent} already joined tag {tag} (branch {branch}); work in its worktree, or "
                         "choose another --agent")
    git("worktree", "add", "-q", "-b", branch, str(wt), _best_commit(led, tag, s))
    (wt / LEDGER_POINTER).write_text(f"{led.path if is_postgres(where) else Path(where).resolve()}\n")
    build_note = _setup_build(repo, wt, build)
    log(f"build: {build_note}")
    log(f"worktree {wt} on branch {branch} at the global best; ledger {led.where}; code travels through {sw['remote']}")
    log(block(tag=tag, agent=agent, worktree=wt, branch=branch, ledger=led.where, remote=sw["remote"],
              next=f'cd {wt} && nanowhale research claim "idea" (then edit, then nanowhale research run -m ...)'))
    return 0


def _setup_build(repo: Path, wt: Path, build: bool) -> str:
    """The worktree's own extension: the built module copied in (it trains at once) and, for a CMake project,
    an in-place build directory build/research that rebuilds the agent's C++ changes (the first one compiles
    everything once)."""
    import nanowhale._C as _C

    modules = sorted((repo / "nanowhale").glob("_C*.so")) or [Path(_C.__file__)]
    for so in [*modules, *modules[0].parent.glob("libnanowhale_mpi*.so")]:
        shutil.copy2(so, wt / "nanowhale" / so.name)
    if not build or not (wt / "CMakeLists.txt").exists():
        return "module copied; no build directory: C++ changes are not rebuilt in this worktree"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    p = subprocess.run(["cmake", "-S", str(wt), "-B", str(wt / "build" / "research"), *gen, "-DCMAKE_BUILD_TYPE=Release",
                        f"-DPython_EXECUTABLE={sys.executable}"], capture_output=True, text=True)
    if p.returncode != 0:
        return ("module copied, but configuring build/research FAILED, so C++ changes are not rebuilt here:\n"
                + "\n".join((p.stdout + p.stderr).splitlines()[-15:]))
    return "module copied; build/research configured (the first run compiles the extension once)"


def _best_commit(led: Ledger, tag: str, s: dict) -> str:
    keeps = led.rows("experiments", "tag = ? AND verdict = 'keep'", (tag,), order="id DESC LIMIT 1",
                     columns=("commit_sha",))
    return keeps[0]["commit_sha"] if keeps and keeps[0]["commit_sha"] else s["start_commit"]


def fetch(git: Git, remote: str, tag: str) -> None:
    """Every agent's published branch of the tag into refs/swarm/TAG/* (not branches: no name clashes)."""
    git("fetch", "-q", remote, f"+refs/heads/{BRANCH_PREFIX}{tag}/*:refs/swarm/{tag}/*")


# ---- claims ----
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def lapsed(c: dict, t: float | None = None) -> bool:
    """An open claim past its lease, or whose agent process on this machine is gone."""
    dead = c["pid"] and c["host"] == socket.gethostname() and not _alive(c["pid"])
    return bool(dead) or (now() if t is None else t) > c["heartbeat_at"] + c["lease_seconds"]


def expire_claims(db, tag: str, t: float | None = None) -> None:
    """Inside a write transaction: lapsed open claims become 'expired'."""
    for c in db.execute("SELECT id, host, pid, heartbeat_at, lease_seconds FROM claims WHERE tag = ? AND "
                        "status = 'open'", (tag,)):
        if lapsed(c, t):
            db.execute("UPDATE claims SET status = 'expired' WHERE id = ?", (c["id"],))


def heartbeat(ctx: Context) -> None:
    """The agent is alive: its open claims' leases start again; lapsed claims of anyone expire."""
    with ctx.ledger.transaction() as db:
        db.execute("UPDATE claims SET heartbeat_at = ? WHERE tag = ? AND agent = ? AND status = 'open'",
                   (now(), ctx.tag, ctx.agent))
        expire_claims(db, ctx.tag)


def open_claims(ctx: Context) -> list[dict]:
    """Open claims whose lease holds (read only: the next write marks the lapsed ones expired)."""
    return [c for c in ctx.ledger.rows("claims", "tag = ? AND status = 'open'", (ctx.tag,)) if not lapsed(c)]


def agents_summary(ctx: Context) -> dict:
    """Per agent: experiments, keeps, stale winners, its best kept metric."""
    out: dict[str, dict] = {}
    for e in ctx.experiments(("agent", "verdict", "metric_mean")):
        a = out.setdefault(e["agent"], {"experiments": 0, "keeps": 0, "stale": 0, "best": None})
        a["experiments"] += 1
        if e["verdict"] in ("keep", "stale"):
            a[{"keep": "keeps", "stale": "stale"}[e["verdict"]]] += 1
        if e["verdict"] == "keep" and (a["best"] is None or (e["metric_mean"] < a["best"]) == (ctx.s["direction"] == "lower")):
            a["best"] = e["metric_mean"]
    return out


def diff_files(diff: str) -> list[str]:
    return sorted({m.group(1) for m in re.finditer(r"^diff --git a/(\S+) b/", diff or "", re.M)})


def diff_config_keys(diff: str) -> list[str]:
    """The experiment-config keys a diff adds, removes or changes: SECTION.KEY when the section header is in
    the hunk, else KEY."""
    keys, section = set(), ""
    for line in (diff or "").splitlines():
        if line.startswith(("+++", "---", "@@", "diff ")):
            section = "" if line.startswith(("@@", "diff ")) else section
            continue
        body = line[1:].strip()
        m = re.match(r"^\[+([^\]]+)\]+$", body)
        if m:
            section = m.group(1).strip()
            continue
        m = re.match(r"^([A-Za-z0-9_.\"-]+)\s*=", body)
        if m and line[:1] in "+-":
            keys.add(f"{section}.{m.group(1)}" if section else m.group(1))
    return sorted(keys)


STOPWORDS = frozenset("a an the of to for in on at by with and or from instead than this that".split())


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower()) if w not in STOPWORDS]


def similar_descriptions(a: str, b: str) -> bool:
    """Near-identical ideas: the same numbers, and most of the same words in the same order (word-level
    difflib ratio), so 'muon lr 0.04' and 'muon lr 0.06' are different ideas."""
    wa, wb = _words(a), _words(b)
    numbers = lambda ws: {w for w in ws if w[0].isdigit()}  # noqa: E731
    return numbers(wa) == numbers(wb) and difflib.SequenceMatcher(None, wa, wb).ratio() >= SIMILAR_DESCRIPTION


def find_duplicate(rows: list[tuple[str, dict]], description: str, files: list[str], keys: list[str]) -> str | None:
    """The first earlier row ('claim N' / 'experiment N') that touches the same files and config keys, or
    whose description is near-identical."""
    for kind, r in rows:
        same_change = (files or keys) and set(files) == set(r["files"]) and set(keys) == set(r["config_keys"])
        similar = similar_descriptions(description, r["description"])
        if same_change or similar:
            why = "same files and config keys" if same_change else "near-identical description"
            return f"{kind} {r['id']} by {r['agent']} ({why}): {r['description'][:80]!r}"
    return None


def claim(description: str, tags: list[str] | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS,
          path=".", log=print) -> int:
    ctx = Context.open(path)
    if not description.strip():
        raise ValueError("claim: describe the idea")
    if not lease_seconds > 0:
        raise ValueError(f"--lease must be > 0 seconds, got {lease_seconds}")
    ctx.git.changed_paths()
    code, config = ctx.git.staged_diff(exclude=[EXPERIMENT_CONFIG]), ctx.git.staged_diff([EXPERIMENT_CONFIG])
    files, keys = diff_files(code + config), diff_config_keys(config)
    pid = int(os.environ.get("NANOWHALE_AGENT_PID", "0") or 0)
    with ctx.ledger.transaction() as db:  # the check and the claim at once: two agents cannot both miss each other
        expire_claims(db, ctx.tag)
        earlier = [("claim", r) for r in ctx.ledger.rows("claims", "tag = ? AND status IN ('open', 'done')", (ctx.tag,))]
        earlier += [("experiment", dict(r, files=diff_files((r["code_diff"] or "") + (r["config_diff"] or "")),
                                        config_keys=diff_config_keys(r["config_diff"])))
                    for r in ctx.ledger.rows("experiments", "tag = ? AND verdict != 'pending'", (ctx.tag,),
                                             columns=("id", "agent", "description", "code_diff", "config_diff"))]
        earlier = [(k, r) for k, r in earlier if not (k == "claim" and r["experiment_id"])]  # done: its experiment counts
        dup = find_duplicate(earlier, description, files, keys)
        db.execute("UPDATE claims SET status = 'released' WHERE tag = ? AND agent = ? AND status = 'open'",
                   (ctx.tag, ctx.agent))  # one idea at a time: a new claim replaces the agent's open one
        t = now()
        cid = ctx.ledger.insert_in_transaction("claims", {
            "agent": ctx.agent, "tag": ctx.tag, "created_at": t, "description": description, "tags": tags or [],
            "files": files, "config_keys": keys, "host": socket.gethostname(), "pid": pid, "heartbeat_at": t,
            "lease_seconds": lease_seconds, "status": "open", "duplicate_of": dup})
    log(block(claim=cid, agent=ctx.agent, description=description, files=" ".join(files) or "none yet",
              config_keys=" ".join(keys) or "none yet", lease_seconds=lease_seconds,
              duplicate_of=dup or "none",
              next=("it was tried or is being tried: `nanowhale research show N` / `status`, then claim something "
                    "else (or say in -m why yours differs)") if dup else 'edit, then nanowhale research run -m "..."'))
    return 0


def close_claims(ctx: Context, eid: int) -> None:
    """The agent's open claims were tried by experiment eid."""
    with ctx.ledger.transaction() as db:
        db.execute("UPDATE claims SET status = 'done', experiment_id = ? WHERE tag = ? AND agent = ? AND "
                   "status = 'open'", (eid, ctx.tag, ctx.agent))


# ---- the swarm's part of run ----
def before_run(ctx: Context) -> None:
    """A run starts only from the global best."""
    heartbeat(ctx)
    best = ctx.best()
    if best and not best["commit_sha"]:  # recorded as kept, its commit a moment away
        raise ValueError(f"experiment {best['id']} by {best['agent']} is being committed as the new global best: "
                         "run `nanowhale research sync` in a moment")
    if best and ctx.git.head() != best["commit_sha"]:
        raise ValueError(f"the global best moved to experiment {best['id']} by {best['agent']} "
                         f"({best['metric_mean']:.6f}): run `nanowhale research sync` first (it keeps your change)")


def confirm_keep(ctx: Context, eid: int, best_at_start: dict | None, upd: dict) -> str:
    """'keep' if the global best is still the one the run was judged against (and the keep is recorded in
    the same transaction), else 'stale' with the reason in upd."""
    with ctx.ledger.transaction() as db:
        rows = db.execute("SELECT id, agent FROM experiments WHERE tag = ? AND verdict = 'keep' ORDER BY id DESC "
                          "LIMIT 1", (ctx.tag,))
        current = rows[0] if rows else None
        if (current and current["id"]) == (best_at_start and best_at_start["id"]):
            db.execute("UPDATE experiments SET verdict = 'keep' WHERE id = ?", (eid,))
            return "keep"
    upd.update(verdict="stale", reason=f"beat the best it started from, but the global best moved to experiment "
               f"{current['id']} by {current['agent']} during the run (`nanowhale research sync` re-applies it "
               f"there for a re-run): " + (upd.get("reason") or ""))
    return "stale"


def publish(ctx: Context, sha: str) -> None:
    ctx.git("push", "-q", "--force", ctx.swarm["remote"], f"{sha}:refs/heads/{ctx.s['branch']}")


class Slot:
    """A held run slot: an flock on slot file N (released by release(), or by the process's death)."""

    def __init__(self, ctx: Context, f, index: int, eid: int | None):
        self.ctx, self.f, self.index, self.eid = ctx, f, index, eid

    def release(self) -> None:
        if self.f is not None:
            event(self.ctx, "slot_end", slot=self.index, experiment=self.eid)  # before the lock is free
            fcntl.flock(self.f, fcntl.LOCK_UN)
            self.f.close()
            self.f = None


def slot_count(ctx: Context) -> int:
    if ctx.swarm.get("slots"):
        return int(ctx.swarm["slots"])
    if (ctx.s.get("machine") or {}).get("gpu"):
        import nanowhale._C as _C

        return max(1, getattr(_C, "cuda_device_count", lambda: 1)())
    return max(1, (os.cpu_count() or 1) // max(1, int(ctx.s["threads"])))


def slot_dir() -> Path:
    if os.environ.get("NANOWHALE_SLOT_DIR"):
        return Path(os.environ["NANOWHALE_SLOT_DIR"])
    from nanowhale.trainer import cache_dir

    return cache_dir() / "research-slots"


def take_slot(ctx: Context, eid: int | None, best_at_start: dict | None, log=print) -> Slot:
    """Waits for one of the machine's run slots (every swarm on this machine shares them). If another agent
    kept meanwhile, this run could only end stale: it is recorded as not run and refused, its change left
    in the tree for `sync`."""
    slot = _wait_for_slot(ctx, eid, log)
    best = ctx.best()
    if (best and best["id"]) != (best_at_start and best_at_start["id"]):
        slot.release()
        why = (f"the global best moved to experiment {best['id']} by {best['agent']} while this run waited for "
               "a slot")
        if eid is not None:
            ctx.ledger.update("experiments", eid, status="not_run", verdict="stale", reason=why, finished_at=now())
        raise ValueError(f"{why}: run `nanowhale research sync` (your change stays in the tree), then run again")
    return slot


def _wait_for_slot(ctx: Context, eid: int | None, log) -> Slot:
    d = slot_dir()
    d.mkdir(parents=True, exist_ok=True)
    n = slot_count(ctx)
    waited = False
    while True:
        for i in range(n):
            f = open(d / f"slot{i}.lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            event(ctx, "slot_start", slot=i, experiment=eid)
            return Slot(ctx, f, i, eid)
        if not waited:
            event(ctx, "slot_wait", slots=n, experiment=eid)
            log(f"waiting for a run slot ({n} on this machine, all in use)")
            waited, beat = True, time.monotonic()
        if time.monotonic() - beat > HEARTBEAT_SECONDS:  # a queued agent is alive: its claims hold
            heartbeat(ctx)
            beat = time.monotonic()
        time.sleep(SLOT_POLL_SECONDS)


# ---- sync ----
def _apply(git: Git, patch: Path) -> bool:
    """Applies a saved diff to the tree (three-way when it does not apply as is); False, tree restored, on a conflict."""
    if not patch.read_text().strip():
        return True
    for args in (["apply", "--index"], ["apply", "--index", "--3way"]):
        if git.ok(*args, str(patch)):
            return True
        git.restore()
    return False


def sync(path=".", log=print) -> int:
    """Moves the agent's branch to the global best, re-applying the change in progress (the working tree's,
    or the agent's last stale experiment's) on top of it for a re-run."""
    ctx = Context.open(path)
    _require_swarm(ctx)
    heartbeat(ctx)
    fetch(ctx.git, ctx.swarm["remote"], ctx.tag)
    best = ctx.best()
    if best and not best["commit_sha"]:
        raise ValueError(f"experiment {best['id']} by {best['agent']} is being committed as the new global best: "
                         "sync again in a moment")
    target = ctx.best_commit()
    head = ctx.git.head()
    if head == target:
        log(block(synced="already at the global best", best=f"experiment {best['id']}" if best else "baseline"))
        return 0
    if not ctx.git.ok("merge-base", "--is-ancestor", head, target):
        raise ValueError(f"branch {ctx.s['branch']} has commits the global best {target[:10]} lacks (made outside "
                         "the harness?): move them aside, then sync")
    ctx.git.changed_paths()
    change, source = ctx.git.staged_diff(), "the working tree"
    mine = ctx.ledger.rows("experiments", "tag = ? AND agent = ?", (ctx.tag, ctx.agent), order="id DESC LIMIT 1")
    if not change.strip() and mine and mine[0]["verdict"] == "stale":
        change, source = (mine[0]["code_diff"] or "") + (mine[0]["config_diff"] or ""), f"experiment {mine[0]['id']}"
    patch = ctx.repo / RESEARCH_DIR / "swarm" / "pending.diff"
    patch.parent.mkdir(parents=True, exist_ok=True)
    patch.write_text(change)
    ctx.git.restore()
    ctx.git("merge", "-q", "--ff-only", target)
    here = remeasure(ctx, best, log)
    applied = _apply(ctx.git, patch)
    if applied:
        ctx.git("reset", "-q")  # back to a plain working-tree change, as the agent left it
    old = ctx.ledger.row("experiments", mine[0]["parent_id"]) if mine and mine[0]["parent_id"] else None
    event(ctx, "sync", frm=head, to=target, best=best and best["id"], change=source if change.strip() else None,
          applied=applied)
    log(block(synced=f"{head[:10]} -> {target[:10]}",
              best=f"experiment {best['id']} by {best['agent']}" if best else "baseline",
              best_metric=best["metric_mean"] if best else "baseline",
              was=old["metric_mean"] if old else "n/a",
              remeasured=(f"{sum(here) / len(here):.6f} over {len(here)} seeds on this machine (the reference "
                          "here)") if here else "no (measured on this kind of machine)",
              change=("none" if not change.strip() else
                      f"{source} re-applied on the new best" if applied else
                      f"{source} CONFLICTS with the new best; not applied (its diff: {patch})"),
              next='nanowhale research run -m "..." (a re-applied change is judged again against the new best)'))
    return 0 if applied or not change.strip() else 4


MACHINE_KEYS = ("cpu", "gpu", "vector_lanes", "threads")  # what makes two machines measure alike


def remeasure(ctx: Context, best: dict | None, log) -> list[float]:
    """The new best trained on this machine for as many seeds as the baseline (recorded as role 'remeasure',
    then the reference of this agent's runs) when its keeper's machine is of another kind; the tree is the
    best's. Returns the values (empty when not needed)."""
    from nanowhale.research import commands

    if best is None or all((best["machine"] or {}).get(k) == ctx.s["machine"].get(k) for k in MACHINE_KEYS):
        return []
    if ctx.remeasured(best):
        return ctx.remeasured(best)
    log(f"the best (experiment {best['id']}) was measured on another kind of machine: measuring it here ...")
    slot = take_slot(ctx, None, best, log)
    try:
        if not commands._ensure_built(ctx, log).ok:
            raise ValueError(f"the best commit {best['commit_sha'][:10]} does not build here")
        for seed in range(ctx.noise()["r"]):
            res = ctx.train_one(f"remeasure-{best['id']}-seed{seed}", seed)
            commands._record_run(ctx, "remeasure", seed, res, commit=best["commit_sha"])
            if res["status"] != "done":
                raise ValueError(f"re-measuring the best here: seed {seed} ended with status {res['status']}:\n"
                                 + (res.get("log_tail") or ""))
    finally:
        slot.release()
    return ctx.remeasured(best)


def _require_swarm(ctx: Context) -> None:
    if ctx.swarm is None:
        raise ValueError(f"not in a swarm worktree (branch {ctx.s['branch']}): `nanowhale research join "
                         f"{ctx.tag} --agent NAME` makes one")


# ---- merge ----
def merge(seeds: int = 1, path=".", log=print) -> int:
    """Every agent's stale winner (it beat the best it started from, but another keep came first), best-first,
    applied on the global best and re-run one at a time: kept when it still helps, dropped otherwise."""
    from nanowhale.research import commands

    ctx = Context.open(path)
    _require_swarm(ctx)
    before_run(ctx)
    if ctx.git.dirty():
        raise ValueError("merge starts from a clean global best: commit nothing, `git stash` your change")
    tried = {e["detail"].get("candidate") for e in ctx.ledger.rows("events", "tag = ? AND kind = 'merge'", (ctx.tag,))}
    tried |= {int(e["detail"]["change"].split()[-1]) for e in ctx.ledger.rows("events", "tag = ? AND kind = 'sync'",
                                                                                (ctx.tag,))
              if (e["detail"].get("change") or "").startswith("experiment ")}
    sign = 1 if ctx.s["direction"] == "lower" else -1
    cands = sorted((e for e in ctx.ledger.rows("experiments", "tag = ? AND verdict = 'stale' AND status = 'done'",
                                               (ctx.tag,))
                    if e["id"] not in tried), key=lambda e: sign * e["metric_mean"])
    kept, dropped = [], []
    patch = ctx.repo / RESEARCH_DIR / "swarm" / "merge.diff"
    patch.parent.mkdir(parents=True, exist_ok=True)
    for c in cands:
        patch.write_text((c["code_diff"] or "") + (c["config_diff"] or ""))
        if not _apply(ctx.git, patch):
            dropped.append(f"#{c['id']} (conflicts)")
            event(ctx, "merge", candidate=c["id"], experiment=None, verdict="conflict")
            continue
        ctx.git("reset", "-q")
        rlog = []
        commands.run(f"merge: {c['description']} (experiment {c['id']} by {c['agent']}, re-run on the best)",
                     seeds=seeds, path=ctx.repo, log=lambda *a: rlog.append(" ".join(map(str, a))))
        row = ctx.ledger.rows("experiments", "tag = ? AND agent = ?", (ctx.tag, ctx.agent), order="id DESC LIMIT 1")[0]
        event(ctx, "merge", candidate=c["id"], experiment=row["id"], verdict=row["verdict"])
        (kept if row["verdict"] == "keep" else dropped).append(f"#{c['id']} -> #{row['id']} {row['verdict']}")
        log(f"candidate #{c['id']} ({c['agent']}: {c['description'][:60]}): {row['verdict']} as experiment {row['id']}")
    best = ctx.best()
    log(block(candidates=len(cands), kept=", ".join(kept) or "none", dropped=", ".join(dropped) or "none",
              best=f"experiment {best['id']} ({best['metric_mean']:.6f})" if best else "baseline",
              commit=ctx.best_commit()))
    return 0


__all__ = ["claim", "confirm_keep", "join", "merge", "sync", "take_slot"]
