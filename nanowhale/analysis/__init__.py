"""Run directories, routing, research ledgers and post-training lineages as tables for notebooks and
`nanowhale plot`; nanowhale.plots draws them. Loading needs only NumPy; drawing needs matplotlib.
"""

from nanowhale.analysis.posttraining import (
    NO_LINEAGE,
    compare_samples,
    lineage_runs,
    lineage_table,
    newest_posttrained,
    stage_metrics,
    stage_of,
    stage_samples,
)
from nanowhale.analysis.research import (
    ResearchLedger,
    baseline_mean,
    kept_table,
    ledger_summary,
    load_ledger,
    newest_ledger,
    progress_table,
    promotions_table,
    verdict_table,
)
from nanowhale.analysis.routing import (
    TOKEN_CLASSES,
    Routing,
    classify_tokens,
    coselection,
    expert_counts,
    route_ids,
    route_text,
    route_validation,
    router_entropy,
    routing_table,
    specialisation,
    token_html,
)
from nanowhale.analysis.runs import (
    Run,
    list_runs,
    load_model,
    load_run,
    load_runs,
    newest_run,
    runs_table,
    task_table,
)
from nanowhale.analysis.table import Table

__all__ = [
    "NO_LINEAGE", "compare_samples", "lineage_runs", "lineage_table", "newest_posttrained", "stage_metrics", "stage_of",
    "stage_samples",
    "ResearchLedger", "baseline_mean", "kept_table", "ledger_summary", "load_ledger", "newest_ledger", "progress_table",
    "promotions_table", "verdict_table",
    "TOKEN_CLASSES", "Routing", "Run", "Table", "classify_tokens", "coselection", "expert_counts", "list_runs",
    "load_model", "load_run", "load_runs", "newest_run", "route_ids", "route_text", "route_validation",
    "router_entropy", "routing_table", "runs_table", "specialisation", "task_table", "token_html",
]
