"""`nanowhale speedrun`: one command from data to a post-trained chat model and its report card.

    plan = make_plan("tiny")             # every stage's budget, data and settings (plan.py, budgets.toml)
    print(plan.describe())
    report = speedrun(plan)              # data -> pretrain -> sft -> [dpo] -> rl -> eval -> RUN/report.md

run.py runs the stages through their own entry points (nanowhale.trainer.train, nanowhale.posttrain.*,
nanowhale.tasks.command.eval_tasks), resumably; report.py writes the report card; origin.py reads the settings
of a research branch (`--from research/TAG`).
"""

from nanowhale.speedrun.plan import Plan, make_plan
from nanowhale.speedrun.run import speedrun

__all__ = ["Plan", "make_plan", "speedrun"]
