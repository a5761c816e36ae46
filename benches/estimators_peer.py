"""Golden values for cgpo's advantage estimators, policy losses, reward
aggregation and KL estimators, computed with PyTorch (float64) from the
peers' published definitions, written in this script's own code:

  verl   verl/trainer/ppo/core_algos.py (compute_grpo_outcome_advantage,
         compute_rloo_outcome_advantage, compute_reinforce_plus_plus_*,
         compute_policy_loss_vanilla with dual clip, agg_loss,
         kl_penalty_forward) and verl/utils/torch_functional.py
         (masked_whiten), read at commit b178a3cd56f5;
  TRL    trl/trainer/grpo_trainer.py (advantages with scale_rewards,
         multi_objective_aggregation="normalize_then_sum", the clipped
         token and sequence-level importance ratios, the loss_type
         aggregations grpo / bnpo / dr_grpo / dapo), read at f2cd57710ae3.

The inputs are fixed (a seeded generator, rounded to 4 decimals, stored in
the output beside the expected values). tests/estimators_golden.rs reads
tests/data/estimators_golden.json and checks cgpo against it to 1e-6.
Regenerate (needs only torch):

    python benches/estimators_peer.py > tests/data/estimators_golden.json
"""

import json

import torch

torch.set_default_dtype(torch.float64)
GEN = torch.Generator().manual_seed(20261203)


def rand(*shape, scale=1.0):
    x = torch.randn(*shape, generator=GEN) * scale
    return torch.round(x * 1e4) / 1e4


def groups_of(index):
    out = {}
    for i, g in enumerate(index):
        out.setdefault(g, []).append(i)
    return out


# ---- advantages (outcome rewards, one value per sample) ----


def verl_grpo(scores, index, eps, norm_by_std=True):
    """Group mean and unbiased std; a group of one: mean 0, std 1."""
    out = scores.clone()
    for members in groups_of(index).values():
        s = scores[members]
        if len(members) == 1:
            mu, sd = torch.tensor(0.0), torch.tensor(1.0)
        else:
            mu, sd = s.mean(), s.std()
        out[members] = (s - mu) / (sd + eps) if norm_by_std else s - mu
    return out


def trl_group_scaled(rewards, index, eps=1e-4):
    """TRL scale_rewards='group': (r - group mean) / (group nanstd + 1e-4)."""
    out = rewards.clone()
    for members in groups_of(index).values():
        s = rewards[members]
        out[members] = (s - s.mean()) / (s.std() + eps)
    return out


def verl_rloo(scores, index):
    out = scores.clone()
    for members in groups_of(index).values():
        n = len(members)
        if n > 1:
            s = scores[members]
            out[members] = s * n / (n - 1) - s.mean() * n / (n - 1)
    return out


def masked_whiten(values, mask):
    """verl: mean and unbiased variance over the masked elements."""
    count = mask.sum()
    mean = (values * mask).sum() / (count + 1e-8)
    var = (((values - mean) ** 2) * mask).sum() / (count + 1e-8)
    var = var * count / (count - 1)
    return (values - mean) * torch.rsqrt(var + 1e-8)


def outcome_tokens(scores, mask):
    """An outcome reward on the last token, returns with gamma = 1: the
    score at every response token."""
    rewards = torch.zeros_like(mask)
    for i in range(mask.shape[0]):
        last = int(mask[i].sum().item()) - 1
        rewards[i, last] = scores[i]
    returns = torch.zeros_like(mask)
    running = torch.zeros(mask.shape[0])
    for t in reversed(range(mask.shape[1])):
        running = rewards[:, t] + running
        returns[:, t] = running
        running = running * mask[:, t]
    return returns


def verl_reinforce_pp(scores, mask):
    return masked_whiten(outcome_tokens(scores, mask), mask) * mask


def verl_reinforce_pp_baseline(scores, index, mask):
    centred = scores.clone()
    for members in groups_of(index).values():
        s = scores[members]
        mu = torch.tensor(0.0) if len(members) == 1 else s.mean()
        centred[members] = s - mu
    tiled = centred[:, None].expand_as(mask) * mask
    return masked_whiten(tiled, mask) * mask


def per_sample(token_values, mask):
    """The one value of each row's response tokens."""
    return [float(token_values[i, 0]) for i in range(mask.shape[0])]


def trl_normalize_then_sum(components, weights, index, eps=1e-4):
    total = torch.zeros(components.shape[1])
    for k in range(components.shape[0]):
        total = total + weights[k] * trl_group_scaled(components[k], index, eps)
    return (total - total.mean()) / (total.std() + eps)


# ---- policy losses ----


def token_ratio_loss(logp, old, adv, lo, hi, dual_clip=None):
    """verl compute_policy_loss_vanilla / TRL's token-level clipped loss."""
    ratio = torch.exp(torch.clamp(logp - old, -20.0, 20.0))
    a = adv[:, None]
    pg1 = -a * ratio
    pg2 = -a * torch.clamp(ratio, 1 - lo, 1 + hi)
    loss = torch.maximum(pg1, pg2)
    if dual_clip is not None:
        pg3 = -a * dual_clip
        loss = torch.where(a < 0, torch.minimum(pg3, loss), loss)
    return loss


def sequence_ratio_loss(logp, old, adv, mask, lo, hi):
    """TRL importance_sampling_level='sequence' (GSPO): one ratio per
    sequence, the exp of the mean token log-ratio, broadcast to tokens."""
    log_w = ((logp - old) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    coef1 = torch.exp(log_w)[:, None]
    coef2 = torch.clamp(coef1, 1 - lo, 1 + hi)
    a = adv[:, None]
    return -torch.minimum(coef1 * a, coef2 * a).expand_as(mask)


def aggregate(loss, mask, mode, norm=None):
    if mode == "token_mean":  # TRL bnpo / dapo, verl token-mean
        return (loss * mask).sum() / mask.sum()
    if mode == "seq_mean_token_mean":  # TRL grpo, verl seq-mean-token-mean
        return ((loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if mode == "seq_mean_token_sum":  # verl seq-mean-token-sum
        return (loss * mask).sum(-1).mean()
    if mode == "seq_mean_token_sum_norm":  # TRL dr_grpo
        return (loss * mask).sum() / (mask.shape[0] * norm)
    raise ValueError(mode)


# ---- KL ----


def verl_kl(logp, ref, mode):
    d = logp - ref
    if mode == "k1":
        return d
    if mode == "abs":
        return d.abs()
    if mode == "k2":
        return 0.5 * d**2
    if mode == "k3":
        r = torch.clamp(ref - logp, -20, 20)
        return torch.clamp(torch.exp(r) - r - 1, -10, 10)
    raise ValueError(mode)


def rows(t):
    return [[float(x) for x in row] for row in t]


def vec(t):
    return [float(x) for x in t]


def main():
    lengths = [4, 2, 3, 1, 4, 2, 3]
    index = [0, 0, 0, 1, 1, 1, 2]  # group 2 has one sample
    n, width = len(lengths), max(lengths)
    mask = torch.zeros(n, width)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1.0
    scores = rand(n)
    scores[6] = 0.7  # the lone sample

    adv_cases = [
        ("CGPO's CRPG batch baseline (the paper's formula; no peer)", "batch", 1e-6,
         scores - scores.mean()),
        ("verl grpo, eps 1e-6", "grpo", 1e-6, verl_grpo(scores, index, 1e-6)),
        ("verl grpo without std (Dr. GRPO)", "per_prompt", 1e-6, verl_grpo(scores, index, 1e-6, False)),
        ("verl rloo", "rloo", 1e-6, verl_rloo(scores, index)),
        ("verl reinforce_plus_plus, gamma 1", "reinforce_pp", 1e-6,
         torch.tensor(per_sample(verl_reinforce_pp(scores, mask), mask))),
        ("verl reinforce_plus_plus_baseline", "reinforce_pp_baseline", 1e-6,
         torch.tensor(per_sample(verl_reinforce_pp_baseline(scores, index, mask), mask))),
    ]
    advantages = [
        {"name": name, "estimator": est, "eps": eps, "rewards": vec(scores),
         "group": index, "lengths": lengths, "expected": vec(out)}
        for name, est, eps, out in adv_cases
    ]
    # TRL's group scaling has no lone-sample rule (its std is NaN): groups of 2+.
    trl_index = [0, 0, 0, 1, 1, 1, 1]
    advantages.append({
        "name": "trl grpo scale_rewards=group, eps 1e-4", "estimator": "grpo", "eps": 1e-4,
        "rewards": vec(scores), "group": trl_index, "lengths": lengths,
        "expected": vec(trl_group_scaled(scores, trl_index, 1e-4)),
    })

    components = torch.stack([rand(n, scale=3.0), rand(n, scale=0.1), rand(n)])
    weights = [1.0, 2.0, 0.5]
    aggregation = [{
        "name": "trl multi_objective_aggregation=normalize_then_sum (GDPO), eps 1e-4",
        "aggregation": "normalize_then_sum", "then": "batch_normalized", "eps": 1e-4,
        "components": rows(components), "weights": weights, "group": trl_index,
        "expected": vec(trl_normalize_then_sum(components, weights, trl_index)),
    }, {
        "name": "trl multi_objective_aggregation=sum_then_normalize, scale_rewards=group",
        "aggregation": "sum", "then": "grpo", "eps": 1e-4,
        "components": rows(components), "weights": weights, "group": trl_index,
        "expected": vec(trl_group_scaled(
            sum(w * components[k] for k, w in enumerate(weights)), trl_index, 1e-4)),
    }]

    logp0 = (rand(n, width, scale=0.5) - 1.5) * mask
    old = (logp0 + rand(n, width, scale=0.3)) * mask
    adv = verl_grpo(scores, index, 1e-6)
    loss_specs = [
        ("trl grpo loss_type=grpo (token ratio, seq-mean-token-mean)", dict(clip=[0.2, 0.2], agg="seq_mean_token_mean")),
        ("trl loss_type=bnpo / verl token-mean", dict(clip=[0.2, 0.2], agg="token_mean")),
        ("trl loss_type=dapo, epsilon_high 0.28", dict(clip=[0.2, 0.28], agg="token_mean")),
        ("trl loss_type=dr_grpo, max_completion_length 6", dict(clip=[0.2, 0.2], agg="seq_mean_token_sum_norm", norm=6.0)),
        ("verl seq-mean-token-sum", dict(clip=[0.2, 0.2], agg="seq_mean_token_sum")),
        ("verl vanilla with dual clip 3", dict(clip=[0.2, 0.2], agg="token_mean", dual=3.0)),
        ("trl importance_sampling_level=sequence (GSPO), loss_type=grpo", dict(clip=[3e-4, 4e-4], agg="seq_mean_token_mean", level="sequence")),
        ("trl sequence level, loss_type=dapo", dict(clip=[0.2, 0.28], agg="token_mean", level="sequence")),
        ("dapo dynamic sampling: groups with equal rewards dropped", dict(clip=[0.2, 0.28], agg="token_mean", dynamic=True)),
        ("on-policy token ratio = REINFORCE gradient, seq-mean-token-sum", dict(clip=None, agg="seq_mean_token_sum")),
        ("on-policy token ratio = REINFORCE gradient, token-mean", dict(clip=None, agg="token_mean")),
        ("on-policy token ratio = REINFORCE gradient, dr_grpo norm 5", dict(clip=None, agg="seq_mean_token_sum_norm", norm=5.0)),
    ]
    dyn_rewards = scores.clone()
    dyn_rewards[3:6] = 0.25  # group 1: all equal
    losses = []
    for name, spec in loss_specs:
        logp = logp0.clone().requires_grad_(True)
        rewards = dyn_rewards if spec.get("dynamic") else scores
        a = verl_grpo(rewards, index, 1e-6)
        keep = list(range(n))
        if spec.get("dynamic"):
            keep = [i for i in range(n)
                    if len(set(float(rewards[j]) for j in groups_of(index)[index[i]])) > 1]
        clip = spec["clip"]
        if clip is None:
            # On policy the ratio is 1; the value is -A (not -A log p) but the
            # gradient is REINFORCE's: -A d log p.
            lo = hi = 0.2
            behaviour = logp.detach()
        else:
            lo, hi = clip
            behaviour = old
            if spec.get("dual"):
                # Make the first token of every response stale enough
                # (ratio > 3) that the dual clip acts on negative advantages.
                behaviour = old.clone()
                behaviour[:, 0] -= 1.5
        if spec.get("level") == "sequence":
            tok = sequence_ratio_loss(logp, behaviour, a, mask, lo, hi)
        else:
            tok = token_ratio_loss(logp, behaviour, a, lo, hi, spec.get("dual"))
        sub = torch.tensor(keep)
        loss = aggregate(tok[sub], mask[sub], spec["agg"], spec.get("norm"))
        loss.backward()
        losses.append({
            "name": name, "clip": clip, "importance_sampling": spec.get("level", "token"),
            "dual_clip": spec.get("dual"), "aggregation": spec["agg"],
            "norm_constant": spec.get("norm"), "dynamic_sampling": bool(spec.get("dynamic")),
            "rewards": vec(rewards), "group": index, "lengths": lengths,
            "logp": rows(logp0), "old": rows(behaviour.detach()), "advantages": vec(a),
            "loss": None if clip is None else float(loss.detach()), "grad": rows(logp.grad * mask),
        })

    lp, lq = rand(8, scale=2.0), rand(8, scale=2.0)
    lp[0], lq[0] = -30.0, 0.0  # k3's clamps
    kl = [{"estimator": m, "logp": vec(lp), "ref": vec(lq), "expected": vec(verl_kl(lp, lq, m))}
          for m in ["k1", "k2", "k3", "abs"]]

    # The exact KL over the vocabulary from two logits rows (verl's `full`
    # raises NotImplementedError; this is the definition), with its gradient
    # w.r.t. the policy's logits.
    zp = rand(5, 7, scale=2.0).requires_grad_(True)
    zq = rand(5, 7, scale=2.0)
    lp_full, lq_full = torch.log_softmax(zp, -1), torch.log_softmax(zq, -1)
    kl_rows = (lp_full.exp() * (lp_full - lq_full)).sum(-1)
    kl_rows.sum().backward()
    kl_full = {"policy_logits": rows(zp.detach()), "ref_logits": rows(zq),
               "expected": vec(kl_rows.detach()), "grad": rows(zp.grad)}

    # TRL's KL term: beta * k3 per token added to the loss, aggregated as
    # loss_type="bnpo" (token mean), with its gradient.
    ref_loss = (logp0 + rand(n, width, scale=0.4)) * mask
    ref_loss[:, 0] = logp0[:, 0]  # p = q on the first tokens: abs's gradient is 0 there
    kl_loss = []
    for mode in ["k1", "k2", "k3", "abs"]:
        logp = logp0.clone().requires_grad_(True)
        term = 0.04 * aggregate(verl_kl(logp, ref_loss, mode), mask, "token_mean")
        term.backward()
        kl_loss.append({"name": f"{mode} per token, token mean, beta 0.04", "estimator": mode,
                        "coef": 0.04, "logp": rows(logp0), "ref": rows(ref_loss),
                        "lengths": lengths, "loss": float(term.detach()),
                        "grad": rows(logp.grad * mask)})

    # verl apply_kl_penalty (use_kl_in_reward): token rewards - beta * kl(old, ref),
    # summed to the outcome score, then GRPO.
    ref = (old + rand(n, width, scale=0.2)) * mask
    beta = 0.05
    kl_reward = []
    for mode in ["k1", "k3"]:
        penalized = scores - beta * (verl_kl(old, ref, mode) * mask).sum(-1)
        kl_reward.append({
            "name": f"verl apply_kl_penalty kl_penalty={mode}, then grpo", "estimator": mode,
            "coef": beta, "scores": vec(scores), "old": rows(old), "ref": rows(ref),
            "group": index, "lengths": lengths,
            "expected": vec(verl_grpo(penalized, index, 1e-6)),
        })

    out = {
        "generated_by": "benches/estimators_peer.py",
        "torch": torch.__version__,
        "advantages": advantages,
        "reward_aggregation": aggregation,
        "policy_losses": losses,
        "kl": kl,
        "kl_full": kl_full,
        "kl_in_loss": kl_loss,
        "kl_in_reward": kl_reward,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
