"""PixMix (Hendrycks et al., 2022) on a whole batch at once, on the batch's device.

    import torch
    from lib.train.pixmix import pixmix_batch
    g = torch.Generator(device=x.device).manual_seed(0)
    mixed = pixmix_batch(x, mixing, g)                 # x [B,1,28,28], mixing [M,1,28,28], both in [0, 1]
    mixed, trace = pixmix_batch(x, mixing, g, return_trace=True)
    trace["n_plain"], trace["op_counts"]               # samples left as plain x; how often each op ran
    trace["mix_counts"], trace["partner_counts"]       # rounds by mixing op and by partner kind

The steps are the reference's (andyzoujm/pixmix; lib/train/pixmix_reference.py is the
literal one-image-at-a-time version with PIL). For each sample x, with the mixing
picture m drawn for it:

    mixed = aug(x) if start_augmented else x           # each with probability 1/2
    for i in range(rounds):                            # rounds ~ U{0, ..., k}
        partner = aug(x) if partner_augmented[i] else m
        mixed = clip(add or multiply(mixed, partner, a[i], b[i]), 0, 1)

`aug` is one operation of lib/train/pixmix_ops.py (OPS, or ALL_OPS with all_ops) at a
level drawn from U(0.1, severity); add and multiply are mix_add and mix_multiply, with
the weights (a, b) of the reference's get_ab (beta).

How the batch runs those steps (_pixmix_rows):
- the plan: every random choice (rounds, start and partner kinds, mixing ops, weights,
  operations and levels, mixing picture) is drawn first, per sample, as tensors
  (_draw_plan); the mixing itself is then deterministic;
- every aug(x) the plan asks for, start pictures and partners of all rounds, goes
  through one call of pixmix_ops.augment_requests;
- round i works on the samples with more than i rounds, sorted so that each kind of
  work (add, multiply, partners from each source, the samples that finish) is one
  slice: the only Python loops run over the k rounds and small fixed groups.

The random draws come per block of samples (_PLAN_BLOCK on the CPU, the whole batch on a
GPU), each block from its own generator seeded from `generator`. On the CPU the batch is
cut into shards of whole blocks, one per torch thread (lib/train/pixmix_shards.py); the
result does not depend on the number of threads.

Speed (CPU): call it on thousands of images at once where possible (about 1 ms fixed
cost per call and shard), and let glibc keep freed memory (the MALLOC_* variables of
the Makefile's JOB_ENV), or every call page-faults its buffers back in. Two steps go
through numpy on CPU tensors (log2, row assignment): same values, several times
faster there. benchmarks/bench_pixmix.py measures it against the reference.
"""
import numpy as np
import torch

from lib.train.pixmix_ops import ALL_OPS, OPS, augment_requests, level_and_sign, op_magnitudes
from lib.train.pixmix_shards import run_in_shards

# Samples per block of random draws on the CPU: the unit shards are made of, so the
# draws never depend on the number of threads. It equals pixmix_shards.MIN_SHARD: the
# smallest shard is one block, and each block's own generator costs little beside its
# 1,024 pictures. Changing it changes every batch that a seed gives.
_PLAN_BLOCK = 1024
# the blocks' seeds are drawn from [0, _SEED_LIMIT): any bound inside int64 (randint's
# type) would do, and changing it changes every batch that a seed gives
_SEED_LIMIT = 2 ** 62

# Round i processes its samples sorted by a key of three bits, so that each kind of work
# is one slice of the running pictures: the adds before the multiplies (one call each);
# within each, the samples that finish in this round before those that mix again (each
# set copied out in one go); within those, the mixing-picture partners before the
# augmented ones (one gather from each source).
_KEY_MULTIPLY = 4
_KEY_MIXES_AGAIN = 2
_KEY_AUGMENTED_PARTNER = 1
_GROUPS = 8            # the keys 0..7 of the samples that mix in the round
_KEY_DONE = _GROUPS    # the samples whose rounds are over sort after them
# rows of a round, as (first group, end group)
_ADD_GROUPS = (0, _KEY_MULTIPLY)
_MULTIPLY_GROUPS = (_KEY_MULTIPLY, _GROUPS)
_FINISHING_GROUPS = ((0, _KEY_MIXES_AGAIN), (_KEY_MULTIPLY, _KEY_MULTIPLY + _KEY_MIXES_AGAIN))
# Round 0 also sorts by the start picture's kind (key * 2 + start_augmented), so that
# the starts are gathered straight into place: plain x, then aug(x), within each group.
_START_GROUPS = 2 * (_GROUPS + 1)


def pixmix_batch(x, mixing, generator, k=4, beta=3.0, severity=3.0, all_ops=False,
                 return_trace=False):
    """PixMix every sample of x with one mixing picture drawn per sample.

    x [B,1,H,W] and mixing [M,1,H,W]: floats in [0, 1] on generator's device.
    Returns the mixed batch (same shape and dtype, values in [0, 1]); with
    return_trace also {"n_samples", "n_plain", "op_counts": {op name: count},
    "mix_counts": {"add", "multiply"}, "partner_counts": {"augmented", "mixing"}}.
    On the CPU, larger batches (thousands) amortise the fixed cost per call, and the
    batch is shared among torch.get_num_threads() threads; the result does not depend on
    how many (beyond float rounding in the last bit).
    """
    if x.dim() != 4 or mixing.dim() != 4 or x.shape[1:] != mixing.shape[1:]:
        raise ValueError(f"pixmix_batch needs x [B,1,H,W] and mixing [M,1,H,W] of the same "
                         f"picture size; got {tuple(x.shape)} and {tuple(mixing.shape)}")
    n, device = x.shape[0], x.device
    block = _PLAN_BLOCK if device.type == "cpu" else max(n, 1)
    seeds = torch.randint(0, _SEED_LIMIT, (-(-n // block),), generator=generator, device=generator.device).tolist()
    mixed = torch.empty_like(x)
    mixing_log2 = _mixing_log2(mixing) if k else None

    def mix_blocks(first_block, last_block):
        """Draw the plan of these blocks, then mix their rows; returns the plan."""
        first, last = first_block * block, min(last_block * block, n)
        plan = _draw_plan([min(block, n - b * block) for b in range(first_block, last_block)],
                          seeds[first_block:last_block], mixing.shape[0], k, beta, severity, all_ops, device)
        _pixmix_rows(mixed[first:last], x[first:last], mixing, mixing_log2, plan, k, severity)
        return plan

    plans = run_in_shards(mix_blocks, len(seeds), n, device)
    if not return_trace:
        return mixed
    plan = _concat_plans(plans) if plans else \
        _draw_plan([0], [0], mixing.shape[0], k, beta, severity, all_ops, device)
    return mixed, _trace(plan, len(ALL_OPS) if all_ops else len(OPS))


# ---------------------------------------------------------------- the plan

def _draw_plan(block_sizes, seeds, n_mixing, k, beta, severity, all_ops, device):
    """Every random choice of PixMix for consecutive blocks of samples, one column per sample.

    Block b draws its numbers from a generator seeded with seeds[b]; the weights are
    then derived from all blocks at once (the magnitudes later, for the slots that are
    used: op_magnitudes of op_ids, level and negate). There is one draw per augmentation
    slot, used or not: slot 0 is the start picture, slots 1..k the partners of rounds
    0..k-1.
    """
    n_ops = len(ALL_OPS) if all_ops else len(OPS)
    # rows of the uniforms: the start kind; per round the partner kind, mixing op, weight
    # kind, u_a and u_b; per slot the level and the sign (unpacked in this order below)
    uniform_rows = [1, k, k, k, k, k, k + 1, k + 1]
    draws = []
    for size, seed in zip(block_sizes, seeds):
        generator = torch.Generator(device=device).manual_seed(seed)
        draws.append((torch.rand(sum(uniform_rows), size, generator=generator, device=device),
                      torch.randint(0, n_ops, (k + 1, size), generator=generator, device=device),
                      torch.randint(0, n_mixing, (size,), generator=generator, device=device),
                      torch.randint(0, k + 1, (size,), generator=generator, device=device)))
    uniforms, op_ids, picks, rounds = (torch.cat(column, dim=-1) for column in zip(*draws))
    start_kind, partner_kind, mixing_op, weight_kind, u_a, u_b, u_level, u_sign = uniforms.split(uniform_rows)
    a, b = _weights_from_uniforms(weight_kind, u_a, u_b, beta)
    level, negate = level_and_sign(u_level, u_sign, severity)
    # the three kinds are the reference's fair coins (rng.random() < 0.5)
    return {
        "picks": picks, "rounds": rounds, "start_augmented": start_kind[0] < 0.5,
        "partner_augmented": partner_kind < 0.5, "use_multiply": mixing_op < 0.5,
        "a": a, "b": b, "op_ids": op_ids, "level": level, "negate": negate,
    }


def _weights_from_uniforms(kind, u_a, u_b, beta):
    """Per-sample (a, b) of the reference's get_ab by inverse-CDF sampling of uniforms.

    U^(1/beta) ~ Beta(beta, 1) and 1 - U^(1/beta) ~ Beta(1, beta); half the time (kind
    < 1/2) a ~ Beta(beta, 1), b ~ Beta(1, beta), else a = 1 + Beta(1, beta), b = -Beta(1,
    beta). 1 - u_a is in (0, 1], so a > 0, as the log-domain multiply needs.
    """
    first_kind = kind < 0.5
    root_a = (1 - u_a).pow_(1 / beta)
    beta_b = 1 - u_b.pow(1 / beta)
    a = torch.where(first_kind, root_a, 2 - root_a)
    b = torch.where(first_kind, beta_b, -beta_b)
    return a, b


def _concat_plans(plans):
    """One plan of consecutive samples from the plans of consecutive blocks."""
    return {key: torch.cat([p[key] for p in plans], dim=-1) for key in plans[0]}


def _slots(plan):
    """(mixes [k, n]: sample s mixes in round i; wants_aug [k + 1, n]: slot j of sample s is
    an aug(x), slot 0 the start picture, slots 1..k the partners of rounds 0..k-1)."""
    k, rounds = plan["use_multiply"].shape[0], plan["rounds"]
    mixes = torch.arange(k, device=rounds.device)[:, None] < rounds[None, :]
    return mixes, torch.cat([plan["start_augmented"][None], plan["partner_augmented"] & mixes])


def _trace(plan, n_ops):
    mixes, wants_aug = _slots(plan)
    rounds = plan["rounds"]
    counts = torch.bincount(plan["op_ids"][wants_aug], minlength=n_ops).tolist()
    n_rounds, n_multiply = int(mixes.sum()), int((plan["use_multiply"] & mixes).sum())
    n_augmented_partners = int((plan["partner_augmented"] & mixes).sum())
    return {"n_samples": rounds.numel(),
            "n_plain": int((~plan["start_augmented"] & (rounds == 0)).sum()),
            "op_counts": dict(zip(ALL_OPS[:n_ops], counts)),
            "mix_counts": {"add": n_rounds - n_multiply, "multiply": n_multiply},
            "partner_counts": {"augmented": n_augmented_partners, "mixing": n_rounds - n_augmented_partners}}


# ---------------------------------------------------------------- the rounds

def _pixmix_rows(out, x, mixing, mixing_log2, plan, k, severity):
    """out <- PixMix of x as the plan (one column per row of x) says; mixing_log2 is
    _clamped_log2_(mixing), the form in which multiplying rounds take a mixing picture."""
    n = x.shape[0]
    mixes, wants_aug = _slots(plan)
    augmented, augmented_row = _augment_slots(x, plan, wants_aug, severity)
    orders, ends, start_ends = _round_orders(plan, mixes)

    # start: mixed = aug(x) or x; with no rounds, that is the result
    mixed = _start_pictures(x, augmented, augmented_row[0], orders[0], start_ends)
    n_mixing = ends[0][-1]
    _copy_rows_(out, orders[0][n_mixing:], mixed[n_mixing:])
    mixed = mixed[:n_mixing]

    for i in range(k):
        round_ends = ends[i]
        if not round_ends[-1]:
            break  # no sample has more than i rounds
        # the samples of round i, in its sorted order, are the rows of `mixed`
        samples = orders[i][:round_ends[-1]]
        # partner = aug(x) or the mixing picture
        partner = _partners(round_ends, augmented, augmented_row[i + 1, samples],
                            mixing, mixing_log2, plan["picks"][samples], like=mixed)
        # mixed = clip(add or multiply(mixed, partner, a, b), 0, 1)
        a, b = plan["a"][i, samples, None, None, None], plan["b"][i, samples, None, None, None]
        adds, multiplies = _rows(round_ends, *_ADD_GROUPS), _rows(round_ends, *_MULTIPLY_GROUPS)
        _add_into(mixed[adds], partner[adds], a[adds], b[adds]).clamp_(0, 1)
        _multiply_by_log2_into(mixed[multiplies], partner[multiplies], a[multiplies], b[multiplies], clip=True)
        for groups in _FINISHING_GROUPS:  # the samples with i + 1 rounds are done
            finished = _rows(round_ends, *groups)
            _copy_rows_(out, samples[finished], mixed[finished])
        if i + 1 < k and ends[i + 1][-1]:
            # the samples that mix again, in round i + 1's order
            position = torch.empty(n, dtype=torch.long, device=x.device)
            position[samples] = torch.arange(round_ends[-1], device=x.device)
            mixed = mixed.index_select(0, position[orders[i + 1][:ends[i + 1][-1]]])


def _augment_slots(x, plan, wants_aug, severity):
    """aug(x) for every slot that wants one, through one call (each is an independent draw
    on the original x). Returns (augmented, row): slot j of sample s is augmented[row[j, s]]."""
    slot_index, sample_index = wants_aug.nonzero(as_tuple=True)
    op_ids = plan["op_ids"][slot_index, sample_index]
    magnitude = op_magnitudes(op_ids, plan["level"][slot_index, sample_index],
                              plan["negate"][slot_index, sample_index], x.shape[-1])
    augmented, order = augment_requests(x, sample_index, op_ids, magnitude, severity)
    row = torch.full(wants_aug.shape, -1, dtype=torch.long, device=x.device)
    row[slot_index[order], sample_index[order]] = torch.arange(order.numel(), device=x.device)
    return augmented, row


def _round_orders(plan, mixes):
    """The order of the samples in every round, and where its groups end.

    Returns (orders, ends, start_ends): orders[i] lists the samples sorted by round i's key
    (those with more than i rounds first); ends[i][g] is the end of group g in it;
    start_ends the same for round 0's _START_GROUPS groups. orders[0] and ends[0] exist
    also when k = 0, when every sample is done at the start.
    """
    k, rounds = mixes.shape[0], plan["rounds"]
    device = rounds.device
    mixes_again = torch.arange(1, k + 1, device=device)[:, None] < rounds[None, :]
    key = torch.where(mixes, plan["use_multiply"].long() * _KEY_MULTIPLY + mixes_again.long() * _KEY_MIXES_AGAIN
                      + plan["partner_augmented"].long() * _KEY_AUGMENTED_PARTNER, _KEY_DONE)
    start_key = (key[0] if k else torch.full_like(rounds, _KEY_DONE)) * 2 + plan["start_augmented"].long()
    orders = [torch.argsort(start_key, stable=True)]
    start_ends = torch.bincount(start_key, minlength=_START_GROUPS).cumsum(0).tolist()
    # group g of round 0 ends where its second half (augmented starts) does
    ends = [[start_ends[2 * group + 1] for group in range(_GROUPS)]]
    if k > 1:
        orders += torch.argsort(key[1:], dim=1, stable=True).unbind()
        # one count of every key per round: round i's keys offset by i (_KEY_DONE + 1)
        keys_per_round = _KEY_DONE + 1
        offsets = keys_per_round * torch.arange(k - 1, device=device)[:, None]
        counts = torch.bincount((key[1:] + offsets).flatten(), minlength=keys_per_round * (k - 1))
        ends += counts.view(k - 1, keys_per_round)[:, :_GROUPS].cumsum(1).tolist()
    return orders, ends, start_ends


def _rows(ends, first_group, end_group):
    """The rows of groups first_group .. end_group - 1 of a round, as a slice."""
    return slice(ends[first_group - 1] if first_group else 0, ends[end_group - 1])


def _start_pictures(x, augmented, augmented_row, order, start_ends):
    """The start pictures of the samples in round 0's order: x or its slot-0 aug(x)."""
    start = torch.empty_like(x)
    begin = 0
    for group, end in enumerate(start_ends):
        if end > begin:
            if group % 2:  # augmented starts
                torch.index_select(augmented, 0, augmented_row[order[begin:end]], out=start[begin:end])
            else:
                torch.index_select(x, 0, order[begin:end], out=start[begin:end])
        begin = end
    return start


def _partners(ends, augmented, augmented_rows, mixing, mixing_log2, mixing_rows, like):
    """The partners of a round's samples (rows like `like`): their aug(x) or their mixing
    picture, group by group; those of multiplying rounds as logs (_clamped_log2_), the form
    _multiply_by_log2_into takes."""
    partner = torch.empty_like(like)
    begin = 0
    for group, end in enumerate(ends):
        if end > begin:
            in_log_domain = group & _KEY_MULTIPLY
            if group & _KEY_AUGMENTED_PARTNER:
                torch.index_select(augmented, 0, augmented_rows[begin:end], out=partner[begin:end])
                if in_log_domain:
                    _clamped_log2_(partner[begin:end])
            else:
                torch.index_select(mixing_log2 if in_log_domain else mixing, 0, mixing_rows[begin:end],
                                   out=partner[begin:end])
        begin = end
    return partner


# ---------------------------------------------------------------- add and multiply

def mix_add(x1, x2, a, b):
    """The reference's additive mixing, unclipped: (a (2 x1 - 1) + b (2 x2 - 1) + 1) / 2.

    x1, x2 in [0, 1]; a, b numbers or one weight per sample.
    """
    a, b = _per_sample(a, x1), _per_sample(b, x1)
    return _add_into(x1.clone(), x2, a, b)


def mix_multiply(x1, x2, a, b):
    """The reference's geometric mixing, unclipped: (2 x1)^a max(2 x2, 1e-37)^b / 2.

    x1, x2 in [0, 1]; a > 0 and b numbers or one weight per sample.
    """
    a, b = _per_sample(a, x1), _per_sample(b, x1)
    return _multiply_into(x1.clone(), x2.clone(), a, b)


def _per_sample(value, like):
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.view(-1, *([1] * (like.dim() - 1))) if value.dim() == 1 else value


def _add_into(x1, x2, a, b):
    """x1 <- a x1 + b x2 + (1 - a - b) / 2, the additive mixing rewritten, in place."""
    return x1.mul_(a).addcmul_(x2, b).add_((1 - a - b) / 2)


def _multiply_into(x1, x2, a, b, clip=False):
    """x1 <- (2 x1)^a max(2 x2, 1e-37)^b / 2 in the log domain, in place (x2 is spoiled).

    With clip, the result is also clipped to [0, 1] at no extra cost, by capping the
    exponent at 0 (the result is never negative).

    = 2^(a log2 x1 + b log2 max(x2, 5e-38) + a + b - 1): two logs and one exp2 cost
    less than two general powers (exp2 is 4x cheaper than exp on the CPU). log(0) and
    underflowing exponents take slow paths (10x), so zeros are clamped to a tiny normal
    float and the exponent kept above -125; 0^a = 0 (a > 0) is restored at the end by
    multiplying with sign(x1).
    """
    return _multiply_by_log2_into(x1, _clamped_log2_(x2), a, b, clip)


def _multiply_by_log2_into(x1, log2_x2, a, b, clip=False):
    """_multiply_into with the second factor given as _clamped_log2_(x2): the mixing
    pictures' logs are computed once per mixing set, not in every round that draws one."""
    nonzero = torch.sign(x1)
    _clamped_log2_(x1).mul_(a)
    x1.addcmul_(log2_x2, b)
    return x1.add_(a + b - 1).clamp_(min=-125, max=0 if clip else None).exp2_().mul_(nonzero)


def _clamped_log2_(t):
    """t <- log2(max(t, 5e-38)) in place: the second factor's log in _multiply_into."""
    return _log2_(t.clamp_min_(5e-38))


def _log2_(t):
    """In-place log2. On the CPU numpy's SIMD log2 is about 5x faster than torch's
    (measured on this project's machines), and the logs are most of a multiply."""
    if t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad:
        values = t.numpy()
        np.log2(values, out=values)
        return t
    return t.log2_()


_log2_cache = (None, -1, None)


def _mixing_log2(mixing):
    """_clamped_log2_ of the mixing pictures, kept while the same tensor, unchanged, comes
    back (a training job passes one set to every call; 10,000 pictures take about 1 ms).
    The cache holds the last set and its logs until another set comes."""
    global _log2_cache
    cached, version, logs = _log2_cache
    if cached is not mixing or version != mixing._version:
        logs = _clamped_log2_(mixing.detach().clone())
        _log2_cache = (mixing, mixing._version, logs)
    return logs


def _copy_rows_(dest, index, rows):
    """dest[index] = rows along dim 0 (index_copy_); numpy's row assignment is about
    3x faster than torch's index_copy_ on the CPU, and these copies run every round."""
    if dest.device.type == "cpu" and dest.is_contiguous() and rows.is_contiguous():
        dest.numpy()[index.numpy()] = rows.numpy()
        return dest
    return dest.index_copy_(0, index, rows)
