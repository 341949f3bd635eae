"""Notebook 10, across devices: merging the statistics of a split batch
(``merge_batch_stats``) and batch renormalization (``batch_renorm_forward``)."""

import numpy as np

from bn_course.checks import _cases, _probes
from bn_course.checks._core import Exercise, knob_mistake
from bn_course.checks.nb02_normalizing import EPS_HINT
from bn_course.reference import numpy as ref

# --- merge_batch_stats -----------------------------------------------------------------

MERGE_HINT = ("mean = sum_k n_k mean_k / N; var = sum_k n_k (var_k + (mean_k - mean)**2) / N, "
              "with N = sum_k n_k: the parts' variances plus the spread of their means.")


def _parts(rng, sizes, d, offset=0.0, one_feature_constant=False):
    """Parts of one batch, each drawn around its own mean (the spread of the means is then
    part of the variance), as (counts, means, biased variances)."""
    parts = []
    for n in sizes:
        centre = offset + rng.uniform(-2, 2, d)
        part = centre + rng.uniform(0.5, 2, d) * rng.standard_normal((n, d))
        if one_feature_constant:
            part[:, -1] = offset + 3.0
        parts.append(part)
    return (np.array(sizes), np.stack([p.mean(axis=0) for p in parts]),
            np.stack([p.var(axis=0) for p in parts]))


def _merge_case(description, counts, means, variances, float32=False):
    if float32:
        means, variances = means.astype(np.float32), variances.astype(np.float32)
    return _cases.function_case(description,
                                {"counts": counts, "means": means, "variances": variances},
                                labels=("mean", "var"), float32=float32)


def _merge_cases(group):
    rng = np.random.default_rng({"basic": 1001, "awkward": 1002, "float32": 1003}[group])
    if group == "basic":
        return [_merge_case(f"{k} equal parts of {n} examples, {d} features",
                            *_parts(rng, [n] * k, d))
                for k, n, d in [(2, 8, 3), (4, 5, 6), (3, 16, 2)]]
    if group == "awkward":
        strided = _parts(rng, [6, 9, 4], 10)
        return [
            _merge_case("parts of 13, 3 and 7 examples", *_parts(rng, [13, 3, 7], 4)),
            _merge_case("parts of 1, 1 and 6 examples (a part of one has variance 0)",
                        *_parts(rng, [1, 1, 6], 3)),
            _merge_case("a single part of 9 examples", *_parts(rng, [9], 3)),
            _merge_case("parts of 5 and 11 examples, a single feature", *_parts(rng, [5, 11], 1)),
            _merge_case("8 parts of 2 examples", *_parts(rng, [2] * 8, 3)),
            _merge_case("parts of 12 and 4 examples with values near 1e4",
                        *_parts(rng, [12, 4], 3, offset=1e4)),
            # Fails the sum-of-squares shortcut, which cancels digits.
            _merge_case("parts of 10 and 6 examples with values near 1e6",
                        *_parts(rng, [10, 6], 3, offset=1e6)),
            _merge_case("parts of 7 and 3 examples whose last feature is the same constant",
                        *_parts(rng, [7, 3], 3, one_feature_constant=True)),
            _merge_case("float counts and non-contiguous (3, 5) views",
                        strided[0].astype(np.float64), strided[1][:, ::2], strided[2][:, ::2]),
        ]
    return [_merge_case(f"float32 statistics of parts of {sizes} examples",
                        *_parts(rng, sizes, d), float32=True)
            for sizes, d in [([8, 8], 3), ([10, 3, 5], 4)]]


def _merge_with(weights="counts", spread="weighted", inputs_unbiased=False,
                output_unbiased=False, one_pass=False):
    """merge_batch_stats with one knob per classic mistake. spread: the spread of the parts'
    means, "weighted" (right: by the parts' weights, around the merged mean), "none",
    "unweighted" (a plain average of (mean_k - mean)**2) or "around-plain-mean" (around the
    unweighted average of the means)."""

    def merge_batch_stats(counts, means, variances):
        counts = np.asarray(counts, dtype=np.float64)
        n = counts.sum()
        w = (counts / n if weights == "counts" else np.full(len(counts), 1 / len(counts)))[:, None]
        if inputs_unbiased:  # read the biased variances as unbiased ones and "correct" them
            variances = variances * np.where(counts > 1, (counts - 1) / counts, 1.0)[:, None]
        mean = (w * means).sum(axis=0)
        if one_pass:
            var = (w * (variances + means ** 2)).sum(axis=0) - mean ** 2
        else:
            centre = means.mean(axis=0) if spread == "around-plain-mean" else mean
            spread_of_means = {"none": 0.0, "unweighted": ((means - mean) ** 2).mean(axis=0)}.get(
                spread, (w * (means - centre) ** 2).sum(axis=0))
            var = (w * variances).sum(axis=0) + spread_of_means
        if output_unbiased:
            var = var * n / (n - 1)
        return mean, var

    return merge_batch_stats


MERGE_BATCH_STATS = Exercise(
    "merge_batch_stats", ref.merge_batch_stats, "merge_batch_stats(counts, means, variances)",
    _merge_cases, build=_merge_with, hint=MERGE_HINT,
    mistakes=[
        knob_mistake("averages-variances", "You averaged the parts' variances and forgot the "
                     "spread of their means: when the parts sit at different means, the whole "
                     "batch varies more than any part.", MERGE_HINT, spread="none"),
        knob_mistake("spread-around-plain-mean", "You measured the spread of the parts' means "
                     "around their plain average, means.mean(axis=0), not around the merged "
                     "mean, which weighs each part by its count.", MERGE_HINT,
                     spread="around-plain-mean"),
        knob_mistake("spread-not-weighted", "You averaged the spread of the parts' means "
                     "without weights: (mean_k - mean)**2 counts n_k times, like var_k.",
                     MERGE_HINT, spread="unweighted"),
        knob_mistake("unweighted-mean-of-means", "You gave every part the same weight, whatever "
                     "its size: a part of 2 examples counts as much as a part of 20.",
                     "Weight each part by its count: counts[:, None] / counts.sum().",
                     weights="uniform"),
        knob_mistake("variances-read-as-unbiased", "You treated the parts' variances as unbiased "
                     "(divided by n_k - 1) and converted them: they are biased already.",
                     "The variances you are given divide by n_k; use them as they are.",
                     inputs_unbiased=True),
        knob_mistake("unbiased-variance", "You returned the unbiased variance of the whole batch "
                     "(divide by N - 1): BN normalizes with the biased one.",
                     "Return the biased variance: divide by N = counts.sum().",
                     output_unbiased=True),
        knob_mistake("sum-of-squares-merge", "You merged sums of squares, "
                     "sum_k n_k (var_k + mean_k**2) / N - mean**2. Right on paper, but with "
                     "values near 1e6 both terms are about 1e12 and their difference loses "
                     "most of its digits.", "Use deviations from the whole mean: "
                     "var = sum_k n_k (var_k + (mean_k - mean)**2) / N.", one_pass=True,
                     precision=True),
    ])


# --- batch_renorm_forward -----------------------------------------------------------------

RENORM_HINT = ("r = clip(sigma_B / sigma, 1/r_max, r_max) and d = clip((mean_B - running_mean) "
               "/ sigma, -d_max, d_max), with sigma_B = sqrt(batch_var + eps) and sigma = "
               "sqrt(running_var + eps); out = gamma * ((x - mean_B) / sigma_B * r + d) + beta.")


def _renorm_inputs(rng, n, d, offset=0.0, dtype=np.float64, constant_feature=False):
    """A batch and running statistics that put some features' r and d beyond their limits
    (the running statistics far from the batch's) and others within (close to them)."""
    x = _cases.batch(rng, n, d, offset=offset, constant_feature=constant_feature)
    far = np.arange(d) % 2 == 0
    batch_std = x.std(axis=0) + 0.1
    running_mean = x.mean(axis=0) + np.where(far, rng.choice([-1, 1], d) * 4.0, 0.3) * batch_std
    # Far features: running std 5x or 1/5 of the batch's, alternately.
    scale = np.where(far, np.where(np.arange(d) % 4 == 0, 5.0, 0.2), rng.uniform(0.8, 1.25, d))
    running_var = (batch_std * scale) ** 2
    gamma, beta = _cases.gamma_beta(rng, d, dtype)
    return (x.astype(dtype), running_mean.astype(dtype), running_var.astype(dtype), gamma, beta)


def _renorm_case(description, inputs, r_max, d_max, eps=None, float32=False):
    x, running_mean, running_var, gamma, beta = inputs
    return _cases.function_case(
        f"{description}, r_max={r_max:g}, d_max={d_max:g}, {_cases.eps_text(eps)}",
        {"x": x, "running_mean": running_mean, "running_var": running_var, "gamma": gamma,
         "beta": beta, "r_max": r_max, "d_max": d_max}, _cases.with_eps({}, eps),
        float32=float32)


def _renorm_cases(group):
    rng = np.random.default_rng({"basic": 1011, "awkward": 1012, "float32": 1013}[group])
    if group == "basic":
        return [_renorm_case(f"a ({n}, {d}) batch", _renorm_inputs(rng, n, d), r_max, d_max, eps)
                for (n, d), (r_max, d_max), eps in zip(
                    [(8, 4), (16, 6), (6, 8), (32, 4)], [(3, 5), (1.5, 0.5), (2, 1), (1e6, 1e6)],
                    [None, 0.1, 1.0, None])]
    if group == "awkward":
        return [
            _renorm_case("a batch of two (2, 4)", _renorm_inputs(rng, 2, 4), 3, 5),
            _renorm_case("a (10, 4) batch (plain batch norm)", _renorm_inputs(rng, 10, 4), 1, 0),
            _renorm_case("a (9, 1) batch, a single feature", _renorm_inputs(rng, 9, 1), 2, 1, 0.1),
            _renorm_case("a (10, 4) batch whose last feature is constant",
                         _renorm_inputs(rng, 10, 4, constant_feature=True), 2, 1),
            _renorm_case("a (20, 4) batch with values near 1e4",
                         _renorm_inputs(rng, 20, 4, offset=1e4), 3, 5, 1e-3),
            _renorm_case("a (12, 8) batch with tight limits", _renorm_inputs(rng, 12, 8),
                         1.2, 0.2, 1.0),
        ]
    return [_renorm_case(f"a float32 ({n}, {d}) batch",
                         _renorm_inputs(rng, n, d, dtype=np.float32), 2, 1, float32=True)
            for n, d in [(8, 4), (16, 6)]]


def _renorm_with(clip=True, swap_rd=False, r_inverted=False, d_in_batch_std=False,
                 symmetric_r_clip=False, eps_place="inside", ddof=0, running_var_as_std=False):
    """batch_renorm_forward with one knob per classic mistake. eps_place: "inside" (right),
    "outside", "forgotten" or "batch-only" (sigma_B has eps, the running sigma not);
    running_var_as_std: running_var read as a running standard deviation, sigma = running_var."""

    def batch_renorm_forward(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
        mean = x.mean(axis=0)
        var = x.var(axis=0, ddof=ddof)
        if eps_place == "inside":
            batch_std, running_std = np.sqrt(var + eps), np.sqrt(running_var + eps)
        elif eps_place == "outside":
            batch_std, running_std = np.sqrt(var) + eps, np.sqrt(running_var) + eps
        elif eps_place == "batch-only":
            batch_std, running_std = np.sqrt(var + eps), np.sqrt(running_var)
        else:  # forgotten
            batch_std, running_std = np.sqrt(var), np.sqrt(running_var)
        if running_var_as_std:
            running_std = running_var
        r = running_std / batch_std if r_inverted else batch_std / running_std
        d = (mean - running_mean) / (batch_std if d_in_batch_std else running_std)
        if clip:
            r = np.clip(r, -r_max if symmetric_r_clip else 1 / r_max, r_max)
            d = np.clip(d, -d_max, d_max)
        if swap_rd:
            r, d = d, r
        return gamma * ((x - mean) / batch_std * r + d) + beta

    return batch_renorm_forward


BATCH_RENORM_FORWARD = Exercise(
    "batch_renorm_forward", ref.batch_renorm_forward,
    "batch_renorm_forward(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5)",
    _renorm_cases, build=_renorm_with, hint=RENORM_HINT, probes=(_probes.ignores_eps,),
    mistakes=[
        knob_mistake("renorm-unclipped", "Your output is eval-mode batch norm: r and d were "
                     "not clipped (unclipped, batch renorm gives exactly (x - running_mean) / "
                     "sigma), or you normalized with the running statistics directly. Training "
                     "then no longer sees batch statistics.",
                     "Normalize with the batch's statistics, then clip r to [1/r_max, r_max] "
                     "and d to [-d_max, d_max] with np.clip.", clip=False),
        knob_mistake("r-and-d-swapped", "You multiplied by d and added r: r (a ratio of standard "
                     "deviations) scales, d (a shift in running standard deviations) is added.",
                     RENORM_HINT, swap_rd=True),
        knob_mistake("r-inverted", "Your r is sigma / sigma_B, upside down: it should be the "
                     "batch's standard deviation over the running one.", RENORM_HINT,
                     r_inverted=True),
        knob_mistake("d-in-batch-std", "You divided the shift of the mean by the batch's "
                     "standard deviation: d is measured in running standard deviations, "
                     "(mean_B - running_mean) / sigma.", RENORM_HINT, d_in_batch_std=True),
        knob_mistake("r-clipped-symmetrically", "Your r goes below 1 / r_max: its lower limit "
                     "is missing or wrong (a limit of 0 or -r_max never acts, r being a "
                     "positive ratio of standard deviations).", RENORM_HINT,
                     symmetric_r_clip=True),
        knob_mistake("eps-outside-sqrt", "You added eps to the standard deviations, outside the "
                     "square roots.", EPS_HINT, eps_place="outside"),
        knob_mistake("forgot-eps", "You left eps out of both standard deviations.", EPS_HINT,
                     eps_place="forgotten"),
        knob_mistake("running-sigma-without-eps", "Your running sigma is sqrt(running_var), "
                     "without eps, while your sigma_B has it: both standard deviations take eps "
                     "inside the square root.", RENORM_HINT, eps_place="batch-only"),
        knob_mistake("running-var-as-std", "Your sigma is running_var itself: the layer keeps "
                     "a running VARIANCE, so its standard deviation is sqrt(running_var + eps).",
                     RENORM_HINT, running_var_as_std=True),
        knob_mistake("unbiased-variance", "You normalized with the unbiased batch variance "
                     "(divide by N - 1).", "Batch renorm normalizes with the biased batch "
                     "variance, as batch norm does: x.var(axis=0).", ddof=1),
    ])

EXERCISES = [MERGE_BATCH_STATS, BATCH_RENORM_FORWARD]
