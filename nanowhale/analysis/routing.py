"""How a checkpoint's MoE layers route tokens: which experts each token goes to (Model.route, in C++),
expert co-selection, router entropy, and whether experts specialise by token class.

    run = nw.load("runs/exp1")
    r = route_text(run, "def main():\\n    return 0\\n")   # r.experts (M, T, K), r.scores (M, T, E)
    coselection(r)       # (M, E, E) how often experts i and j serve the same token
    router_entropy(r)    # (M, T) entropy of the normalised router scores, in nats
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

# Token classes for specialisation, decided from each vocabulary entry's bytes.
TOKEN_CLASSES = ("special", "newline", "space", "word", "Word", "digit", "punct", "other")


@dataclass
class Routing:
    ids: np.ndarray          # (N,) token ids
    pieces: list[str]        # N decoded token strings
    moe_layers: list[int]    # model layer index of each MoE layer
    experts: np.ndarray      # (M, N, K) selected experts, in selection order
    scores: np.ndarray       # (M, N, E) router scores sigmoid(x W_r)
    n_experts: int


def _moe_layers(cfg) -> list[int]:
    return list(range(cfg.n_dense_layers, cfg.n_layer))  # the first n_dense_layers are dense


# The functions taking a loaded model (nw.load, analysis.load_model) return None for None, so a notebook
# section without a checkpoint yet runs through and says so.


def route_ids(run, ids: np.ndarray) -> Routing | None:
    """Routing of token rows ids (B, T) (flattened to N = B*T tokens); run is nw.load(...)'s LoadedModel."""
    if run is None:
        return None
    ids = np.asarray(ids, dtype=np.int32)
    if ids.ndim != 2:
        raise ValueError(f"ids must be (B, T), got shape {ids.shape}")
    cfg = run.model.config
    if ids.shape[1] > cfg.seq_len:
        raise ValueError(f"rows of {ids.shape[1]} tokens exceed the model's seq_len {cfg.seq_len}")
    experts, scores = run.model.route(ids)                   # (M, B, T, K), (M, B, T, E)
    M = experts.shape[0]
    flat = ids.reshape(-1)
    pieces = [run.tokenizer.decode([int(t)]) for t in flat]
    return Routing(flat, pieces, _moe_layers(cfg), experts.reshape(M, flat.size, -1),
                   scores.reshape(M, flat.size, -1), cfg.n_experts)


def route_text(run, text: str) -> Routing | None:
    """Routing of `text` as one sequence (BOS first, as in training), cut to the model's seq_len."""
    if run is None:
        return None
    bos = run.tokenizer.special_id("<|bos|>")
    ids = [bos] + list(run.tokenizer.encode(text))[: run.model.config.seq_len - 1]
    return route_ids(run, np.array([ids]))


def route_validation(run, rows: int = 8) -> Routing | None:
    """Routing of the first `rows` rows of the run's validation stream (the data val_bpb uses)."""
    if run is None:
        return None
    from nanowhale.data.shards import Loader, shard_paths

    data_dir = run.checkpoint.meta.get("data_dir")
    if not data_dir:
        raise ValueError(f"checkpoint {run.checkpoint.dir} does not name its data directory")
    T = run.model.config.seq_len
    loader = Loader(shard_paths(data_dir, "val"), rows, T, bos_id=run.tokenizer.special_id("<|bos|>"),
                    vocab_size=run.tokenizer.vocab_size, packed=False, seed=0)
    batch = loader.next()
    if batch is None:
        raise ValueError(f"the validation shards in {data_dir} hold fewer than {rows} rows of {T + 1} tokens")
    return route_ids(run, batch[:, :-1])


def expert_counts(r: Routing) -> np.ndarray:
    """(M, E) tokens routed to each expert."""
    return np.stack([np.bincount(layer.reshape(-1), minlength=r.n_experts) for layer in r.experts])


def coselection(r: Routing) -> np.ndarray:
    """(M, E, E): [m, i, j] tokens that layer m sends to both i and j (the diagonal: tokens to i)."""
    M, N, _ = r.experts.shape
    onehot = np.zeros((M, N, r.n_experts), dtype=np.int64)
    np.put_along_axis(onehot, r.experts.astype(np.int64), 1, axis=2)
    return np.einsum("mni,mnj->mij", onehot, onehot)


def router_entropy(r: Routing) -> np.ndarray:
    """(M, N) entropy in nats of each token's router scores normalised to sum 1 (log E: uniform)."""
    p = r.scores / r.scores.sum(axis=2, keepdims=True)
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=2)


def routing_table(r: Routing | None):
    """One row per MoE layer: tokens, dead experts, max load / mean load, mean router entropy / log E."""
    from nanowhale.analysis.table import Table

    if r is None:
        return "no checkpoint yet: nothing to route"
    counts = expert_counts(r)
    h = router_entropy(r) / np.log(r.n_experts)
    return Table({"layer": np.array(r.moe_layers), "tokens": np.full(len(r.moe_layers), len(r.ids)),
                  "dead_experts": (counts == 0).sum(axis=1),
                  "max_load_over_mean": counts.max(axis=1) / counts.mean(axis=1),
                  "entropy_over_log_E": h.mean(axis=1)})


def classify_tokens(tokenizer) -> np.ndarray:
    """(V,) index into TOKEN_CLASSES of every vocabulary entry (one pass over the vocabulary)."""
    if tokenizer is None:
        return None
    out = np.empty(tokenizer.vocab_size, dtype=np.int64)
    for t in range(tokenizer.vocab_size):
        b = tokenizer.token_bytes(t)
        s = b.decode("utf-8", errors="replace").strip(" ")
        if t >= tokenizer.n_ordinary:  # special tokens follow the ordinary ones
            c = "special"
        elif b"\n" in b:
            c = "newline"
        elif not s:
            c = "space"
        elif s.isdigit():
            c = "digit"
        elif s.isalpha():
            c = "Word" if s[0].isupper() else "word"
        elif all(not ch.isalnum() for ch in s):
            c = "punct"
        else:
            c = "other"
        out[t] = TOKEN_CLASSES.index(c)
    return out


def specialisation(r: Routing, classes: np.ndarray) -> np.ndarray:
    """(M, C, E): [m, c, e] fraction of layer m's routing slots of tokens of class c that go to expert e
    (each row sums to 1 where the class occurs; 1/E everywhere would mean no specialisation)."""
    M, _, K = r.experts.shape
    C = len(TOKEN_CLASSES)
    cls = np.repeat(classes[r.ids], K)                       # (N*K,) class of each routing slot
    out = np.zeros((M, C, r.n_experts))
    for m in range(M):
        flat = cls * r.n_experts + r.experts[m].reshape(-1)
        out[m] = np.bincount(flat, minlength=C * r.n_experts).reshape(C, r.n_experts)
    totals = out.sum(axis=2, keepdims=True)
    return np.divide(out, totals, out=np.zeros_like(out), where=totals > 0)


def expert_colours(n_experts: int) -> list[str]:
    """One distinguishable hex colour per expert: tab10, then tab20's dark shades before its light ones, then hsv."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if n_experts <= 10:
        return [to_hex(colormaps["tab10"](i)) for i in range(n_experts)]
    if n_experts <= 20:
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return [to_hex(colormaps["tab20"](order[i])) for i in range(n_experts)]
    return [to_hex(colormaps["hsv"](i / n_experts)) for i in range(n_experts)]


def token_html(r: Routing | None, layer: int = 0) -> str:
    """The text with each token on the colour of the first expert MoE layer `layer` (0 = first MoE layer)
    selected for it; hovering shows all selected experts and their scores. For IPython.display.HTML."""
    if r is None:
        return "<p>no checkpoint yet: nothing to route</p>"
    colours = expert_colours(r.n_experts)
    spans = []
    for i, piece in enumerate(r.pieces):
        sel = r.experts[layer, i]
        tip = ", ".join(f"e{e}: {r.scores[layer, i, e]:.2f}" for e in sel)
        text = html.escape(piece).replace("\n", "↵<br>") or "∅"
        spans.append(f'<span style="background:{colours[sel[0]]}" title="{tip}">{text}</span>')
    legend = " ".join(f'<span style="background:{c}">&nbsp;e{e}&nbsp;</span>' for e, c in enumerate(colours))
    return (f"<div style='font-family:monospace;white-space:pre-wrap;line-height:1.6'>{''.join(spans)}</div>"
            f"<div style='font-size:smaller'>MoE layer {r.moe_layers[layer]}, first-choice expert: {legend}</div>")
