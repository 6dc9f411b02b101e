"""Top-k Online Label Smoothing: the soft-label matrix S and its statistics in memory linear in the class count.

Row c of S is held as its `top_k` largest entries (column indices, -1 marking an empty slot, and values) plus its
residual mass, spread uniformly over the row's other columns, so a row sums to what the dense row sums to. The
statistics go to a per-class candidate store of fixed size (`candidates` columns per class): the `top_k` largest
probabilities of every correctly predicted sample are staged, and merged into their classes' stores when the stage
fills and before each update (duplicates summed, each class's `candidates` largest kept, the rest added to its
residual); each sample's mass outside its top entries goes to the residual directly. No K x K tensor and no
dense (B, K) row of S is ever built.

Exact and approximate (the method card, docs/methods/ols.md, says the same): with top_k >= K everything equals the
dense rule to float rounding. Otherwise a kept entry is a lower bound of the dense mean, every row's mass is exact,
and the L1 distance between a sparse row and the dense row is at most twice the row's residual mass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .common import autocast_off, first_max_index

EMPTY = -1
"""The column index of an unused slot (its value is 0)."""

DENSE_VIEW_MAX_CLASSES = 4096
"""`dense()` refuses larger class counts: a K x K float32 matrix of 4096 classes is 64 MiB."""

DIRECT_SELECTION_MAX_CLASSES = 3000
"""`largest_entries` searches rows of up to this many classes whole; longer ones through group maxima, which costs
a dozen small operations more but selects from far fewer entries (faster from about 4,000 classes on, on the CPU:
at B = 125, m = 32 both take 1.4 and 2.1 ms at 2,000 classes, 3.9 and 3.2 ms at 6,000 on a loaded core)."""

PENDING_ENTRIES = 2**18
"""Candidates staged between merges into the store (3 MiB): a merge costs a few sorts, so it runs when this fills."""


def select_largest(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(values, columns) of each row's k largest entries, unordered: `values.topk(k, sorted=False)`, and on the
    CPU numpy's introselect (`argpartition`) instead, about twice as fast at the sizes OLS asks for (32 of 1,000
    columns of 125 rows on one loaded thread: 0.8 ms, against 1.7 ms through group maxima and two `topk` calls and
    2.6 ms for one `topk`). Under ties at the k-th value either keeps any of the tied columns."""
    if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64):
        return values.topk(k, dim=1, sorted=False)
    array = values.detach().numpy()
    columns = np.argpartition(array, array.shape[1] - k, axis=1)[:, array.shape[1] - k:]
    return torch.from_numpy(np.take_along_axis(array, columns, axis=1)), torch.from_numpy(columns)


def largest_entries(probs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(values, columns) of each row's k largest entries (unordered), as `probs.topk(k, sorted=False)` up to ties.

    Rows of up to DIRECT_SELECTION_MAX_CLASSES columns are searched whole (`select_largest`). Longer ones are cut
    into G groups of g ~ sqrt(K / k) columns (group j: columns j, j + G, j + 2G, ..., so the maxima are an
    elementwise max of g contiguous slices), the last K - gG columns a group of their own: the k largest entries
    lie in the k groups of largest maxima (a group holding one of them has a maximum at least the k-th largest,
    and at most k groups do), so one pass and two small selections replace one over all K columns.
    """
    num_classes = probs.size(1)
    group = max(1, round((num_classes / k) ** 0.5))
    full = num_classes // group
    if num_classes <= DIRECT_SELECTION_MAX_CLASSES or full < 2 * k or group < 2:
        return select_largest(probs, k)
    maxima = probs[:, :full * group].view(probs.size(0), group, full).amax(dim=1)
    if full * group < num_classes:
        maxima = torch.cat([maxima, probs[:, full * group:].amax(dim=1, keepdim=True)], dim=1)
    chosen = select_largest(maxima, k)[1]
    # group j < G holds columns j + G t; the tail group j = G holds G g + t (fewer than g: the rest masked)
    tail = chosen == full
    start = torch.where(tail, full * group, chosen).unsqueeze(2)
    stride = torch.where(tail, 1, full).unsqueeze(2)
    cols = (start + stride * torch.arange(group, device=probs.device)).flatten(1)
    inside = cols < num_classes
    cols = torch.where(inside, cols, 0)
    vals = torch.where(inside, probs.gather(1, cols), -1.0)
    top, where = select_largest(vals, k)
    return top, cols.gather(1, where)


def stable_order(keys: Tensor, limit: int) -> Tensor:
    """The permutation that sorts int64 `keys` in [0, limit) stably, as `torch.argsort(keys, stable=True)`. On the
    CPU, where numpy sorts integers several times faster (SIMD sorting networks), it is one `np.sort` of each key
    shifted above its position, when that fits in 63 bits."""
    count = keys.numel()
    shift = max(1, (count - 1).bit_length())
    if keys.device.type == "cpu" and count and limit <= 2 ** (63 - shift):
        packed = np.sort((keys.numpy() << shift) | np.arange(count))
        return torch.from_numpy(packed & ((1 << shift) - 1))
    return torch.argsort(keys, stable=True)


def top_entries(key: Tensor, vals: Tensor, num_rows: int, num_cols: int,
                capacity: int) -> tuple[Tensor, Tensor, Tensor]:
    """Coalesce entries keyed row * num_cols + col (values of a repeated key summed, in the order given) and keep
    each row's `capacity` largest.

    Returns index (num_rows, capacity) int32 (EMPTY where a row has fewer entries), value (num_rows, capacity) in
    descending order per row (ties: the lower column first) and dropped (num_rows,), the sum of what was not kept.
    """
    device = vals.device
    order = stable_order(key, num_rows * num_cols)  # a repeated key's values stay in the order given, summed in it
    key, vals = key.index_select(0, order), vals.index_select(0, order)  # index_select: a third of `[]`'s time
    first = torch.ones(key.numel(), dtype=torch.bool, device=device)
    torch.ne(key[1:], key[:-1], out=first[1:])
    unique = key.index_select(0, first.nonzero().squeeze(1))
    sums = torch.zeros(unique.numel(), dtype=vals.dtype, device=device).index_add_(0, first.cumsum(0) - 1, vals)
    row = unique // num_cols
    # one stable sort by (row, value descending): the float32 bits, made monotone, below the row in an int64
    bits = sums.float().view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()
    order = stable_order(row * 2**32 + (2**31 - 1 - ordered), num_rows * 2**32)
    row, unique, value = (t.index_select(0, order) for t in (row, unique, sums))
    per_row = torch.bincount(row, minlength=num_rows)
    rank = torch.arange(row.numel(), device=device) - (per_row.cumsum(0) - per_row).index_select(0, row)
    keep = rank < capacity
    kept = keep.nonzero().squeeze(1)
    slots = row.index_select(0, kept) * capacity + rank.index_select(0, kept)
    index = torch.full((num_rows * capacity,), EMPTY, dtype=torch.int32, device=device)
    top = torch.zeros(num_rows * capacity, dtype=vals.dtype, device=device)
    index[slots] = (unique.index_select(0, kept) - row.index_select(0, kept) * num_cols).to(torch.int32)
    top[slots] = value.index_select(0, kept)
    dropped = torch.zeros(num_rows, dtype=vals.dtype, device=device).index_add_(
        0, row, torch.where(keep, torch.zeros((), dtype=vals.dtype, device=device), value))
    return index.view(num_rows, capacity), top.view(num_rows, capacity), dropped


def _flat(index: Tensor, value: Tensor, num_cols: int) -> tuple[Tensor, Tensor]:
    """The used slots of (R, L) index/value as flat (key, value) pairs, key = row * num_cols + col."""
    used = index >= 0
    rows = torch.arange(index.size(0), device=index.device).unsqueeze(1).expand_as(index)
    return (rows * num_cols + index)[used], value[used]


def _merged(parts: list[tuple[Tensor, Tensor]], num_rows: int, num_cols: int,
            capacity: int) -> tuple[Tensor, Tensor, Tensor]:
    """`top_entries` of several (key, value) lists taken together."""
    keys, vals = (torch.cat(p) for p in zip(*parts))
    return top_entries(keys, vals, num_rows, num_cols, capacity)


def uniform_level(index: Tensor, residual: Tensor, num_classes: int) -> Tensor:
    """Each row's value on the columns it does not keep: residual / (K - kept columns); 0 where all are kept."""
    others = num_classes - (index >= 0).sum(dim=1)
    return torch.where(others > 0, residual / others.clamp(min=1), torch.zeros_like(residual))


def dense_rows(index: Tensor, value: Tensor, residual: Tensor, num_classes: int) -> Tensor:
    """The (R, K) dense rows of sparse rows (for small K: views, tests, the run folder's .npy)."""
    out = uniform_level(index, residual, num_classes).unsqueeze(1).repeat(1, num_classes)
    used = index >= 0
    rows = torch.arange(index.size(0), device=index.device).unsqueeze(1).expand_as(index)
    out[rows[used], index[used].long()] = value[used]
    return out


def sparse_entries(index: Tensor, value: Tensor, residual: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """S[rows, cols] of sparse rows, one entry per (row, col) pair, without a dense view: the kept value where the
    row keeps that column, else the row's uniform level (the very numbers `dense_rows` would hold there)."""
    kept = index[rows]  # (P, m)
    match = kept == cols.to(kept.dtype).unsqueeze(1)
    level = uniform_level(kept, residual[rows], index.size(0))
    return torch.where(match.any(dim=1), torch.where(match, value[rows], 0.0).sum(dim=1), level)


def row_maxima(index: Tensor, value: Tensor, residual: Tensor, num_classes: int) -> Tensor:
    """The largest entry of each sparse row (kept values and the uniform level)."""
    kept = torch.where(index >= 0, value, torch.zeros_like(value)).amax(dim=1)
    return torch.maximum(kept, uniform_level(index, residual, num_classes))


def initial_topk_rows(num_classes: int, top_k: int, init: str, eps: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """S before the first update, as (index, value, residual): zeros, uniform 1/K, or (1-eps) I + eps/K, exactly."""
    index = torch.full((num_classes, top_k), EMPTY, dtype=torch.int32)
    value = torch.zeros(num_classes, top_k)
    if init == "zeros":
        return index, value, torch.zeros(num_classes)
    if init == "uniform":
        return index, value, torch.ones(num_classes)
    if init == "ls":
        index[:, 0] = torch.arange(num_classes, dtype=torch.int32)
        value[:, 0] = 1.0 - eps + eps / num_classes
        return index, value, torch.full((num_classes,), eps - eps / num_classes)
    raise ValueError(f"init must be 'zeros', 'uniform' or 'ls', got {init!r}")


class _SparseTargetCrossEntropy(torch.autograd.Function):
    """scale * -(1/B) sum_i [sum_j W_ij log p_i[C_ij] + u_i sum_k log p_ik] with p = softmax(z), from the logits,
    the (B, L) columns C and weights W and the (B,) uniform weights u: the cross-entropy against the target rows
    W scattered at C plus u everywhere, without building them.

    Forward: one softmax; log p at the columns is z - z_j + log max p (j the top-probability class, as in
    `_TargetCrossEntropy`), and sum_k log p_k = sum_k (z_k - z_j) + K log max p (shifted first, so exact under a shared
    offset). Backward: grad z = coef (W scattered + u - (sum_j W_j + K u) p),
    in two passes; with create_graph it is built from differentiable ops, so double backward is exact. The weights
    and u get their gradients too (coef log p at C, coef sum_k log p_k), so a target that requires grad gets one.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, cols: Tensor, weights: Tensor, uniform: Tensor, scale: float,
                scratch: Tensor | None, top1: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        probs = torch.softmax(logits, dim=1)
        top_prob = probs.amax(dim=1, keepdim=True)
        if top1:
            first = first_max_index(probs, top_prob.squeeze(1), scratch)
            reference = logits.gather(1, first.long().clamp_(0, logits.size(1) - 1).unsqueeze(1))
        else:
            first, reference = None, logits.amax(dim=1, keepdim=True)
        log_top = top_prob.log()
        log_cols = logits.gather(1, cols).sub_(reference).add_(log_top)  # (B, L) log-probabilities
        num_classes = logits.size(1)
        log_sum = torch.sub(logits, reference, out=scratch).sum(dim=1) + num_classes * log_top.squeeze(1)
        # 0 x (-inf) = NaN: a non-finite logit anywhere makes the loss non-finite, the callers' witness
        loss = ((log_cols * weights).sum() + torch.dot(uniform, log_sum)) * (-scale / logits.size(0))
        ctx.save_for_backward(logits, probs, cols, weights, uniform, log_cols, log_sum)
        ctx.scale = scale
        ctx.mark_non_differentiable(probs, *([] if first is None else [first]))
        ctx.set_materialize_grads(False)
        return loss, probs, first

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, *_unused: Tensor) -> tuple[Tensor | None, ...]:
        none = (None,) * 7
        if grad_loss is None:
            return none
        logits, probs, cols, weights, uniform, log_cols, log_sum = ctx.saved_tensors
        coef = grad_loss * (-ctx.scale / logits.size(0))
        num_classes = logits.size(1)
        if torch.is_grad_enabled():  # create_graph: recompute what depends on the inputs, differentiably
            probs = torch.softmax(logits, dim=1)
            log_top = torch.log_softmax(logits, dim=1)
            log_cols, log_sum = log_top.gather(1, cols), log_top.sum(dim=1)
        grad_logits = grad_weights = grad_uniform = None
        if ctx.needs_input_grad[0]:
            mass = (weights.sum(dim=1) + num_classes * uniform).unsqueeze(1)
            if torch.is_grad_enabled():
                grad_logits = (uniform.unsqueeze(1) - probs * mass).scatter_add(1, cols, weights) * coef
            else:  # two passes over (B, K), in place
                grad_logits = torch.mul(probs, mass * -coef).add_((uniform * coef).unsqueeze(1))
                grad_logits.scatter_add_(1, cols, weights * coef)
        if ctx.needs_input_grad[2]:
            grad_weights = log_cols * coef
        if ctx.needs_input_grad[3]:
            grad_uniform = log_sum * coef
        return grad_logits, None, grad_weights, grad_uniform, None, None, None


def topk_targets(target: Tensor, index: Tensor, value: Tensor, level: Tensor, hard_weight: float,
                 soft_weight: float) -> tuple[Tensor, Tensor, Tensor, float]:
    """(cols, weights, uniform, scale): scale * (weights at cols + uniform everywhere) is the OLS target row,
    hard_weight * onehot + soft_weight * S[y], with S given as sparse rows (index, value) and each row's uniform
    level (`uniform_level` of index and residual, kept per class beside S: one gather a step instead of a count).

    A sparse row is its uniform level u on every column plus (value - u) at its kept columns. Dense (B, K) targets t
    use the rows of their non-zero classes (mixup and cutmix: two): hard_weight * t + soft_weight * sum_j t_j S[j],
    at O(B q top_k) memory for q non-zero classes per row; class indices use their one row, unweighted.
    """
    share = None
    if target.dim() == 2:
        support = int((target > 0).sum(dim=1).max())
        share, classes = target.float().topk(max(support, 1), dim=1)
    else:
        classes = target.unsqueeze(1)
    ones = torch.ones(classes.shape, device=classes.device) if share is None else share
    if not soft_weight:
        return classes, ones, ones.new_zeros(ones.size(0)), hard_weight
    flat = classes.flatten()
    rows = index.index_select(0, flat).view(*classes.shape, -1)  # (B, q, top_k)
    levels = level.index_select(0, flat).view(classes.shape)
    excess = torch.where(rows >= 0, value.index_select(0, flat).view(rows.shape) - levels.unsqueeze(2), 0.0)
    if share is not None:
        excess, levels = excess * share.unsqueeze(2), levels * share
    cols = rows.clamp(min=0).long().flatten(1)
    weights = excess.flatten(1)
    if hard_weight:
        cols = torch.cat([cols, classes], dim=1)
        weights = torch.cat([weights, ones * (hard_weight / soft_weight)], dim=1)
    return cols, weights, levels.sum(dim=1), soft_weight


def topk_loss_and_probs(logits: Tensor, target: Tensor, index: Tensor, value: Tensor, level: Tensor,
                        hard_weight: float = 0.5, soft_weight: float = 0.5, scratch: Tensor | None = None,
                        top1: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """The OLS loss against sparse rows (index, value, and each row's uniform `level`) in float32 (autocast off),
    with the float32 softmax and, with `top1`, the first index of each row's maximum, as `ols_loss_and_probs` gives
    them for a dense S."""
    with autocast_off(logits.device.type):
        cols, weights, uniform, scale = topk_targets(target, index, value, level, hard_weight, soft_weight)
        return _SparseTargetCrossEntropy.apply(logits.float(), cols, weights, uniform, scale, scratch, top1)


class TopKSoftLabels:
    """S as sparse rows and the candidate store its next value accumulates in; the rules of `_update` on them.

    State (float32, int32 column indices, int64 keys), for K classes, m = top_k and C = candidates: S as index
    (K, m), value (K, m), residual (K,); the store as index (K, C), value (K, C), residual (K,); counts (K,); up to
    PENDING_ENTRIES staged candidates (key, value); each row's uniform level (K,), derived from S. At K = 100,000,
    m = 32, C = 64: 80 MB in all.
    """

    _FIELDS = ("index", "value", "residual", "store_index", "store_value", "store_residual", "counts")
    _TENSORS = (*_FIELDS, "pending_keys", "pending_values", "level")
    STATE_KEYS = ("soft_labels_index", "soft_labels_value", "soft_labels_residual", "candidates_index",
                  "candidates_value", "candidates_residual", "counts", "pending_keys", "pending_values")

    def __init__(self, num_classes: int, top_k: int, candidates: int | None, init: str, init_eps: float) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be a positive number of entries per row, got {top_k}")
        candidates = 2 * top_k if candidates is None else int(candidates)
        if candidates < top_k:
            raise ValueError(f"candidates ({candidates}) must be at least top_k ({top_k})")
        self.num_classes = num_classes
        self.top_k = min(int(top_k), num_classes)
        self.candidates = min(candidates, num_classes)
        self.index, self.value, self.residual = initial_topk_rows(num_classes, self.top_k, init, init_eps)
        self._rows_changed()
        self.store_index = torch.full((num_classes, self.candidates), EMPTY, dtype=torch.int32)
        self.store_value = torch.zeros(num_classes, self.candidates)
        self.store_residual = torch.zeros(num_classes)
        self.counts = torch.zeros(num_classes)
        self.pending_keys = torch.zeros(PENDING_ENTRIES, dtype=torch.int64)
        self.pending_values = torch.zeros(PENDING_ENTRIES)
        self.pending = 0  # staged entries in use

    @property
    def device(self) -> torch.device:
        return self.value.device

    def to(self, device: torch.device) -> None:
        """Move every tensor to `device` (float32 stays float32)."""
        for name in self._TENSORS:
            setattr(self, name, getattr(self, name).to(device))

    def nbytes(self) -> int:
        """Bytes held by S and the statistics."""
        return sum(getattr(self, name).nbytes for name in self._TENSORS)

    def dense(self) -> Tensor:
        """S as a (K, K) float32 matrix, for K up to DENSE_VIEW_MAX_CLASSES."""
        if self.num_classes > DENSE_VIEW_MAX_CLASSES:
            raise ValueError(f"a dense view of a top-k soft-label matrix of {self.num_classes} classes would need "
                             f"{self.num_classes ** 2 * 4 / 2**30:.1f} GiB; read `sparse_soft_labels` instead")
        return dense_rows(self.index, self.value, self.residual, self.num_classes)

    def loss_and_probs(self, logits: Tensor, target: Tensor, hard_weight: float, soft_weight: float,
                       scratch: Tensor | None, top1: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        return topk_loss_and_probs(logits, target, self.index, self.value, self.level, hard_weight,
                                   soft_weight, scratch, top1)

    @torch.no_grad()
    def accumulate(self, logits: Tensor, probs: Tensor, top1: Tensor, labels: Tensor, temperature: float) -> None:
        """Stage the top_k probabilities of each correctly predicted sample for its class's store; add its mass
        outside them to the class's residual and 1 to its count."""
        correct = top1 == labels
        self.counts.index_add_(0, labels, correct.to(torch.float32))
        rows = correct.nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        classes = labels.index_select(0, rows)
        sample = (probs.index_select(0, rows) if temperature == 1.0
                  else torch.softmax(logits.index_select(0, rows).float() / temperature, dim=1))
        top, cols = largest_entries(sample, self.top_k)
        self.store_residual.index_add_(0, classes, (1.0 - top.sum(dim=1)).clamp_(min=0.0))
        keys = (classes.unsqueeze(1) * self.num_classes + cols).flatten()
        if self.pending + keys.numel() > PENDING_ENTRIES:
            self.flush((keys, top.flatten()))
        else:
            self.pending_keys[self.pending:self.pending + keys.numel()] = keys
            self.pending_values[self.pending:self.pending + keys.numel()] = top.flatten()
            self.pending += keys.numel()

    @torch.no_grad()
    def flush(self, extra: tuple[Tensor, Tensor] | None = None) -> None:
        """Merge the staged candidates (and `extra` ones) into the store: per class, duplicates summed, the
        `candidates` largest kept, the rest added to the residual."""
        K = self.num_classes
        keys = self.pending_keys[:self.pending]
        vals = self.pending_values[:self.pending]
        if extra is not None:
            keys, vals = torch.cat([keys, extra[0]]), torch.cat([vals, extra[1]])
        self.pending = 0
        if keys.numel() == 0:
            return
        classes = keys // K
        touched = torch.zeros(K, dtype=torch.bool, device=self.device).index_fill_(0, classes, True)
        affected = touched.nonzero().squeeze(1)
        local = (touched.cumsum(0) - 1).index_select(0, classes)
        stored = _flat(self.store_index[affected], self.store_value[affected], K)
        index, value, dropped = _merged([stored, (keys + (local - classes) * K, vals)], affected.numel(), K,
                                        self.candidates)
        self.store_index[affected], self.store_value[affected] = index, value
        self.store_residual.index_add_(0, affected, dropped)

    @torch.no_grad()
    def reduce(self, group: Any = None) -> None:
        """Combine the stores of all processes: all-gather, then merge per class (capacity as in a step)."""
        self.flush()
        world = dist.get_world_size(group)
        gathered = {name: [torch.empty_like(getattr(self, name)) for _ in range(world)]
                    for name in ("store_index", "store_value")}
        for name, parts in gathered.items():
            dist.all_gather(parts, getattr(self, name), group=group)
        dist.all_reduce(self.store_residual, group=group)
        dist.all_reduce(self.counts, group=group)
        parts = [_flat(i, v, self.num_classes) for i, v in zip(gathered["store_index"], gathered["store_value"])]
        self.store_index, self.store_value, dropped = _merged(parts, self.num_classes, self.num_classes,
                                                              self.candidates)
        self.store_residual.add_(dropped)

    @torch.no_grad()
    def update(self, empty_class: str, freeze_threshold: float | None, momentum: float) -> None:
        """S <- store / counts row-wise with the dense path's empty-class, freeze and momentum rules; reset the
        store. The store's columns beyond top_k join the residual."""
        self.flush()
        K, m = self.num_classes, self.top_k
        n = self.counts.clamp(min=1.0)
        seen = self.counts > 0
        index = self.store_index[:, :m].clone()
        value = self.store_value[:, :m] / n.unsqueeze(1)
        residual = (self.store_residual + self.store_value[:, m:].sum(dim=1)) / n
        if empty_class == "uniform":
            index[~seen], value[~seen], residual[~seen] = EMPTY, 0.0, 1.0
        keep = ~seen if empty_class == "keep" else torch.zeros_like(seen)
        if freeze_threshold is not None:
            keep |= seen & (row_maxima(self.index, self.value, self.residual, K) >= freeze_threshold)
        if momentum:
            index, value, residual = self._blend(index, value, residual, momentum)
        self.index = torch.where(keep.unsqueeze(1), self.index, index)
        self.value = torch.where(keep.unsqueeze(1), self.value, value)
        self.residual = torch.where(keep, self.residual, residual)
        self._rows_changed()
        self.store_index.fill_(EMPTY)
        self.store_value.zero_()
        self.store_residual.zero_()
        self.counts.zero_()

    def _blend(self, index: Tensor, value: Tensor, residual: Tensor, momentum: float) -> tuple[Tensor, Tensor, Tensor]:
        """w S + (1 - w) new with w = momentum on rows that hold mass (0 on the all-zero rows of init="zeros").

        Each row is its uniform level b = w u_old + (1 - w) u_new everywhere plus the weighted excesses of both
        rows' kept entries; the top_k largest of their sums are kept and the rest joins the residual.
        """
        K = self.num_classes
        old_mass = self.value.sum(dim=1) + self.residual
        weight = (old_mass > 0).float() * momentum
        level_old = uniform_level(self.index, self.residual, K)
        level_new = uniform_level(index, residual, K)
        base = weight * level_old + (1 - weight) * level_new
        parts = [_flat(self.index, (self.value - level_old.unsqueeze(1)) * weight.unsqueeze(1), K),
                 _flat(index, (value - level_new.unsqueeze(1)) * (1 - weight).unsqueeze(1), K)]
        blended_index, excess, _ = _merged(parts, K, K, self.top_k)
        blended = torch.where(blended_index >= 0, excess + base.unsqueeze(1), torch.zeros_like(excess))
        mass = weight * old_mass + (1 - weight) * (value.sum(dim=1) + residual)
        return blended_index, blended, (mass - blended.sum(dim=1)).clamp(min=0.0)

    def state_tensors(self) -> dict[str, Tensor]:
        staged = (self.pending_keys[:self.pending], self.pending_values[:self.pending])
        return dict(zip(self.STATE_KEYS, (*(getattr(self, name) for name in self._FIELDS), *staged)))

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        """Restore what `state_tensors` gave; a state for another class count or top_k is a ValueError."""
        shapes = {"soft_labels_index": (self.num_classes, self.top_k),
                  "candidates_index": (self.num_classes, self.candidates)}
        for key, shape in shapes.items():
            if tuple(state[key].shape) != shape:
                raise ValueError(f"OLS top-k state {key} has shape {tuple(state[key].shape)}, but this loss "
                                 f"(num_classes={self.num_classes}, top_k={self.top_k}, "
                                 f"candidates={self.candidates}) needs {shape}")
        pending = state["pending_keys"].numel()
        if pending > PENDING_ENTRIES:
            raise ValueError(f"OLS top-k state stages {pending} candidates, more than {PENDING_ENTRIES}")
        for key, name in zip(self.STATE_KEYS, self._FIELDS):
            dtype = torch.int32 if name.endswith("index") else torch.float32
            setattr(self, name, state[key].to(device=self.device, dtype=dtype).clone())
        self.pending_keys[:pending] = state["pending_keys"].to(self.device)
        self.pending_values[:pending] = state["pending_values"].to(self.device)
        self.pending = pending
        self._rows_changed()

    def _rows_changed(self) -> None:
        """Recompute what is derived from S's rows: each row's uniform level, which the loss reads every step (a few
        thousand rows at a time, so the count of kept slots never makes a (K, m) int64 copy: 102 MB at K = 100,000,
        m = 128)."""
        self.level = torch.cat([uniform_level(index, residual, self.num_classes)
                                for index, residual in zip(self.index.split(4096), self.residual.split(4096))])
