"""Batched log-likelihood scoring of ranked-classification requests by a causal LM, fast
enough to run at every checkpoint.

The context of a document is run once for all its choices (the choices are packed after it in
one row, each attending only to the context and itself, via a 4D attention mask and explicit
position ids); rows from many documents are batched, sorted by length; logits are computed only
at the positions that predict continuation tokens; under accelerate each process scores a shard
of the rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ladder.eval.requests import TokenizedTask

log = logging.getLogger(__name__)


@dataclass
class _Row:
    """One sequence fed to the model and the continuation tokens it scores."""

    tokens: np.ndarray
    seg: np.ndarray  # 0 = context, i+1 = i-th packed continuation (attends to context + itself)
    pos: np.ndarray  # position ids
    pred_pos: np.ndarray  # position whose logits predict each scored token
    target: np.ndarray  # the scored token
    req: np.ndarray  # global request index of each scored token


def _plain_row(ctx: np.ndarray, cont: np.ndarray, req: int, max_len: int) -> _Row:
    if len(cont) >= max_len:
        # the continuation alone overflows the model's window: condition on the last context
        # token and score the first max_len - 1 continuation tokens (counted; warned about)
        cont = cont[: max_len - 1]
        ctx = ctx[-1:]
    q = np.concatenate([ctx, cont[:-1]])
    cut = max(0, len(q) - max_len)  # truncate the context from the left, like the reference
    q = q[cut:]
    start = len(ctx) - cut - 1
    n = len(q)
    return _Row(q, np.zeros(n, np.int64), np.arange(n), start + np.arange(len(cont)), cont,
                np.full(len(cont), req))


def _packed_row(ctx: np.ndarray, conts: list[tuple[int, np.ndarray]]) -> _Row:
    L = len(ctx)
    toks, segs, pos, pred, tgt, reqs = [ctx], [np.zeros(L, np.int64)], [np.arange(L)], [], [], []
    at = L
    for i, (req, cont) in enumerate(conts):
        body = cont[:-1]
        toks.append(body)
        segs.append(np.full(len(body), i + 1))
        pos.append(L + np.arange(len(body)))
        pred.append(np.concatenate([[L - 1], at + np.arange(len(body))]))
        tgt.append(cont)
        reqs.append(np.full(len(cont), req))
        at += len(body)
    cat = lambda xs: np.concatenate(xs).astype(np.int64)  # noqa: E731
    return _Row(cat(toks), cat(segs), cat(pos), cat(pred), cat(tgt), cat(reqs))


def build_rows(tasks: list[TokenizedTask], max_len: int, pack: bool) -> tuple[list[_Row], int]:
    """Rows for all requests of all tasks (request index = offset of its task + local index)."""
    rows: list[_Row] = []
    offset = 0
    for tt in tasks:
        groups: dict[int, list[int]] = {}
        for r, c in enumerate(tt.req_ctx):
            groups.setdefault(int(c), []).append(r)
        for c, reqs in groups.items():
            ctx = tt.ctx_tokens[c]
            conts = [(offset + r, tt.cont_tokens[r]) for r in reqs]
            if pack and len(reqs) > 1 and len(ctx) + sum(len(x) - 1 for _, x in conts) <= max_len:
                rows.append(_packed_row(ctx, conts))
            else:
                rows.extend(_plain_row(ctx, x, r, max_len) for r, x in conts)
        offset += tt.n_requests
    return rows, offset


def _unwrap(model):
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _max_length(model, default: int = 2048) -> int:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return default


class RequestScorer:
    """Sum of log-probabilities of each request's continuation tokens, batched.

    `pack=True` runs a document's context once for all its choices; it needs a model that honours
    custom 4D attention masks and position ids (HF eager/sdpa attention). The first call checks
    this on one document against unpacked rows and falls back to unpacked rows otherwise."""

    def __init__(self, batch_size: int = 32, max_length: int | None = None, pack: bool = True,
                 pad_token_id: int = 0, logits_chunk: int = 1024, max_batch_tokens: int = 65536):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        self.batch_size = batch_size
        self.max_length = max_length
        self.pack = pack
        self.pad_token_id = pad_token_id
        self.logits_chunk = logits_chunk
        self.max_batch_tokens = max_batch_tokens
        self._pack_ok: dict[tuple, bool] = {}
        self._keep_kw: dict[type, bool] = {}

    # --- one forward pass
    def _forward(self, model, rows: list[_Row], packed: bool) -> tuple[np.ndarray, np.ndarray]:
        device = next(model.parameters()).device
        B, T = len(rows), max(len(r.tokens) for r in rows)
        ids = np.full((B, T), self.pad_token_id, dtype=np.int64)
        seg = np.full((B, T), -1, dtype=np.int64)  # -1 marks padding
        pos = np.zeros((B, T), dtype=np.int64)
        keep = np.zeros((B, T), dtype=bool)
        for b, r in enumerate(rows):
            n = len(r.tokens)
            ids[b, :n], seg[b, :n], pos[b, :n] = r.tokens, r.seg, r.pos
            keep[b, r.pred_pos] = True
        kwargs: dict[str, Any] = {"input_ids": torch.from_numpy(ids).to(device), "use_cache": False}
        if packed and seg.max() > 0:
            # context tokens: causal; a packed continuation: the context + its own earlier tokens
            sg = torch.from_numpy(seg).to(device)
            ar = torch.arange(T, device=device)
            allowed = (ar[None, :] <= ar[:, None])[None] & (
                (sg[:, None, :] == 0) | (sg[:, None, :] == sg[:, :, None])) & (sg[:, None, :] >= 0)
            allowed |= torch.eye(T, dtype=torch.bool, device=device)  # padding sees itself: no NaN
            allowed = allowed[:, None]
            if getattr(model.config, "_attn_implementation", "eager") == "eager":
                dtype = next(model.parameters()).dtype
                mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
                mask.masked_fill_(~allowed, torch.finfo(dtype).min)
            else:
                mask = allowed
            kwargs["attention_mask"] = mask
            kwargs["position_ids"] = torch.from_numpy(pos).to(device)
        else:  # right padding: natural positions, 2D padding mask
            kwargs["attention_mask"] = torch.from_numpy(seg >= 0).long().to(device)
        keep_t = torch.from_numpy(keep).to(device)
        logits = self._call(model, kwargs, keep_t)
        if logits.dim() == 3:
            logits = logits[keep_t.to(logits.device)]
        # flat index of (row, position) among the kept positions, row-major
        flat_index = (np.cumsum(keep.reshape(-1)) - 1).reshape(B, T)
        sel = torch.from_numpy(np.concatenate([flat_index[b, r.pred_pos] for b, r in enumerate(rows)]))
        target = torch.from_numpy(np.concatenate([r.target for r in rows]))
        req = np.concatenate([r.req for r in rows])
        # log-softmax once per kept position (chunked to bound memory), then pick each target
        sel, target = sel.to(logits.device), target.to(logits.device)
        lp = torch.empty(len(sel), dtype=torch.float32, device=logits.device)
        for s in range(0, logits.shape[0], self.logits_chunk):
            ls = torch.log_softmax(logits[s:s + self.logits_chunk].float(), dim=-1)
            m = (sel >= s) & (sel < s + ls.shape[0])
            lp[m] = ls[sel[m] - s, target[m]]
        out = lp.double().cpu()
        return req, out.numpy()

    def _call(self, model, kwargs: dict, keep: torch.Tensor) -> torch.Tensor:
        """Forward, asking for logits only at `keep` (HF `logits_to_keep` boolean mask) when the
        model supports it; otherwise all logits."""
        key = type(_unwrap(model))
        if self._keep_kw.get(key, True):
            try:
                logits = model(**kwargs, logits_to_keep=keep).logits
                if logits.dim() == 2 and logits.shape[0] == int(keep.sum()) or logits.shape[:2] == keep.shape:
                    self._keep_kw[key] = True
                    return logits
            except (TypeError, ValueError, IndexError, RuntimeError) as e:
                log.info("model does not take a boolean logits_to_keep (%s); computing all logits", e)
            self._keep_kw[key] = False
        return model(**kwargs).logits

    # --- packing check
    def _packing_works(self, model, rows: list[_Row], max_len: int) -> bool:
        impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
        key = (type(_unwrap(model)), impl, next(model.parameters()).dtype)
        if key not in self._pack_ok:
            ok = impl in ("eager", "sdpa")  # attention kernels that take a dense 4D mask
            probe = next((r for r in rows if r.seg.max() > 1), None) if ok else None
            if probe is not None:
                ctx = probe.tokens[probe.seg == 0]
                plain = [_plain_row(ctx, probe.target[probe.req == r], int(r), max_len)
                         for r in dict.fromkeys(probe.req.tolist())]
                req_u, lp_u = self._forward(model, plain, packed=False)
                try:
                    req_p, lp_p = self._forward(model, [probe], packed=True)
                except (TypeError, ValueError, RuntimeError) as e:
                    log.warning("this model cannot take a custom attention mask (%s); scoring "
                                "each choice separately", e)
                    self._pack_ok[key] = False
                    return False
                keys = sorted(set(req_p.tolist()))
                a = np.array([lp_p[req_p == r].sum() for r in keys])
                b = np.array([lp_u[req_u == r].sum() for r in keys])
                fp32 = next(model.parameters()).dtype == torch.float32
                tol = (1e-3 if fp32 else 5e-2) * max(1, len(lp_p))
                ok = bool(np.all(np.abs(a - b) <= tol))
                if not ok:
                    log.warning("packed scoring disagrees with unpacked (max diff %.3g): this model "
                                "ignores custom attention masks; scoring each choice separately",
                                float(np.max(np.abs(a - b))))
            self._pack_ok[key] = ok
        return self._pack_ok[key]

    def _batches(self, rows: list[_Row]) -> list[list[_Row]]:
        """Consecutive rows (longest first), at most batch_size rows and max_batch_tokens padded
        tokens each (bounds the B x T x T attention mask and activations for long rows)."""
        out: list[list[_Row]] = []
        for r in rows:
            if out and len(out[-1]) < self.batch_size and \
                    (len(out[-1]) + 1) * len(out[-1][0].tokens) <= self.max_batch_tokens:
                out[-1].append(r)
            else:
                out.append([r])
        return out

    # --- all requests
    @torch.no_grad()
    def score(self, model, tasks: list[TokenizedTask], accelerator=None) -> np.ndarray:
        """Log-likelihood (nats) of every request of `tasks`, concatenated in task order."""
        inner = _unwrap(model)
        max_len = self.max_length or _max_length(inner)
        packed = False
        if self.pack:
            rows, n_req = build_rows(tasks, max_len, pack=True)
            packed = self._packing_works(inner, rows, max_len)
            if not packed:
                rows, n_req = build_rows(tasks, max_len, pack=False)
        else:
            rows, n_req = build_rows(tasks, max_len, pack=False)
        n_cut = sum(int(len(t) >= max_len) for tt in tasks for t in tt.cont_tokens)
        if n_cut:
            log.warning("%d continuations are longer than the model's context (%d tokens): only "
                        "their first %d tokens are scored", n_cut, max_len, max_len - 1)
        rows.sort(key=lambda r: -len(r.tokens))  # similar lengths together: little padding
        world = getattr(accelerator, "num_processes", 1) if accelerator is not None else 1
        rank = getattr(accelerator, "process_index", 0) if accelerator is not None else 0
        mine = self._batches(rows[rank::world])
        # every process runs the same number of forward passes (FSDP/DDP collectives stay paired)
        n_batches = max(len(self._batches(rows[r::world])) for r in range(world))
        reqs, lps = [], []
        for i in range(n_batches):
            batch = mine[i] if i < len(mine) else []
            if not batch:  # idle process: run a dummy batch and drop it
                self._forward(inner, rows[:1], packed)
                continue
            req, lp = self._forward(inner, batch, packed)
            reqs.append(req)
            lps.append(lp)
        req = np.concatenate(reqs) if reqs else np.zeros(0, np.int64)
        lp = np.concatenate(lps) if lps else np.zeros(0)
        if world > 1:
            from accelerate.utils import gather_object
            parts = gather_object([(req, lp)])
            req = np.concatenate([p[0] for p in parts])
            lp = np.concatenate([p[1] for p in parts])
        ll = np.zeros(n_req, dtype=np.float64)
        np.add.at(ll, req, lp)
        return ll
