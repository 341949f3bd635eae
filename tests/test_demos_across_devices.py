"""Notebook 10's demos: synced BN on a real gloo group equals single-process BN (outputs,
running statistics, gradients), data-parallel training with it, and batch renorm."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bn_course import distributed
from bn_course.demos import across_devices as demo
from bn_course.distributed import GroupUnavailable, WorkerFailed
from bn_course.numerics import relative_error
from bn_course.reference.numpy import batch_renorm_forward, merge_batch_stats

needs_group = pytest.mark.skipif(distributed.unavailable_reason() is not None,
                                 reason="no process group here")


def average_of_variances(counts, means, variances):
    """A catalogued mistake: forgets the spread of the means."""
    weights = np.asarray(counts, float)[:, None] / np.sum(counts)
    return (weights * means).sum(0), (weights * variances).sum(0)


@needs_group
def test_synced_bn_equals_single_process_bn():
    result = demo.sync_check(merge_batch_stats)
    assert result.output_error < 1e-12
    assert result.running_mean_error < 1e-12 and result.running_var_error < 1e-12
    assert result.per_worker_output_error > 0.05  # without syncing, it is not the same


@needs_group
def test_a_wrong_merge_shows_in_the_synced_outputs():
    result = demo.sync_check(average_of_variances)
    assert result.output_error > 1e-3 and result.running_var_error > 1e-3
    assert result.running_mean_error < 1e-12  # the mean is right


def _synced_gradients(rank, world_size, x, dout, weight, bias):
    part, dpart = (torch.from_numpy(np.array_split(a, world_size)[rank]) for a in (x, dout))
    part.requires_grad_()
    w, b = (torch.tensor(v, requires_grad=True) for v in (weight, bias))
    out, *_ = demo.sync_batchnorm_function().apply(part, w, b, 1e-5, merge_batch_stats)
    out.backward(dpart)
    return out.detach().numpy(), part.grad.numpy(), w.grad.numpy(), b.grad.numpy()


@needs_group
def test_synced_bn_backward_equals_the_whole_batch_gradient():
    rng = np.random.default_rng(0)
    x = 3 + 2 * rng.standard_normal((11, 4))
    dout, weight, bias = rng.standard_normal((11, 4)), rng.uniform(0.5, 2, 4), rng.normal(size=4)
    results = distributed.run_workers(_synced_gradients, 2, (x, dout, weight, bias), timeout=60)
    xt, wt, bt = (torch.tensor(v, requires_grad=True) for v in (x, weight, bias))
    out = F.batch_norm(xt, None, None, wt, bt, training=True)
    out.backward(torch.from_numpy(dout))
    assert relative_error(np.concatenate([r[0] for r in results]), out.detach()) < 1e-12
    assert relative_error(np.concatenate([r[1] for r in results]), xt.grad) < 1e-12
    # Each worker's parameter gradient covers its part; their sum is the whole batch's.
    assert relative_error(sum(r[2] for r in results), wt.grad) < 1e-12
    assert relative_error(sum(r[3] for r in results), bt.grad) < 1e-12


@needs_group
def test_synced_bn_trains_far_better_at_two_examples_per_worker():
    result = demo.data_parallel_experiment(merge_batch_stats)
    (per_worker_losses, per_worker), (synced_losses, synced) = (
        result.runs["per-worker BN"], result.runs["synced BN"])
    assert len(per_worker_losses) == len(synced_losses) == result.steps
    assert synced > per_worker + 0.2
    assert demo.data_parallel_figure(result) is not None


@pytest.mark.parametrize("error", [WorkerFailed("worker 1 failed; its traceback: ..."),
                                   GroupUnavailable("this runtime cannot start worker processes")])
def test_run_or_explain_turns_a_failed_group_into_one_line(error, capsys):
    def failing():
        raise error

    assert demo._run_or_explain(failing) is None
    assert f"did not complete: {error}" in capsys.readouterr().out


def test_labs_skip_with_a_reason_where_processes_cannot_start(monkeypatch, not_grading, capsys):
    monkeypatch.setattr(distributed, "unavailable_reason", lambda: "no semaphores here")
    assert demo.data_parallel_lab(merge_batch_stats) is None
    demo.sync_check_lab(merge_batch_stats)
    out = capsys.readouterr().out
    assert out.count("Skipped") == 2 and "no semaphores here" in out


def test_nothing_runs_under_nbgrader(grading, capsys, monkeypatch):
    monkeypatch.setattr(distributed, "run_workers", None)  # would fail if called
    assert demo.data_parallel_lab(merge_batch_stats) is None
    assert demo.sync_check_lab(merge_batch_stats) is None
    assert demo.renorm_check(batch_renorm_forward) is None
    assert demo.renorm_lab() is None and demo.two_workers_figure() is None
    assert capsys.readouterr().out == ""


def student_batch_renorm(x, running_mean, running_var, gamma, beta, r_max, d_max, eps=1e-5):
    """A correct answer as a student writes it (the course's own is refused by the guard)."""
    sigma_b, sigma = np.sqrt(x.var(0) + eps), np.sqrt(running_var + eps)
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = np.clip((x.mean(0) - running_mean) / sigma, -d_max, d_max)
    return gamma * ((x - x.mean(0)) / sigma_b * r + d) + beta


def test_renorm_check_shows_round_off_for_a_correct_answer(not_grading, capsys):
    demo.renorm_check(student_batch_renorm)
    errors = [float(line.split()[-1]) for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(errors) == 3 and max(errors) < 1e-12


def test_renorm_check_waits_for_an_answer_that_passes(not_grading, capsys):
    def unfinished(*args, **kwargs):
        raise NotImplementedError

    assert demo.renorm_check(unfinished) is None
    assert "Run this cell again once it passes" in capsys.readouterr().out


def test_batch_renorm_and_groupnorm_survive_class_sorted_batches():
    results = demo.renorm_experiment()  # what the notebook shows
    sorted_batches = results["batches of 32 from one class"]
    assert sorted_batches["batch renorm"] > sorted_batches["BN"] + 0.3
    assert sorted_batches["GroupNorm"] > sorted_batches["BN"] + 0.3
    assert min(results["random batches of 32"].values()) > 0.9


def test_two_workers_figure_shows_the_variance_average_falls_short(not_grading):
    fig = demo.two_workers_figure()
    assert "Average of the workers' variances" in fig.axes[0].get_title()


@needs_group
def test_group_lab_runs_both_experiments_in_one_group(monkeypatch):
    starts = []
    real_run = distributed.run_workers
    monkeypatch.setattr(distributed, "run_workers",
                        lambda *args, **kwargs: starts.append(1) or real_run(*args, **kwargs))
    demo.group_lab.cache_clear()
    check_result, training = demo.group_lab(merge_batch_stats)
    assert check_result.output_error < 1e-12 and check_result.batch_sizes == (13, 16, 9)
    assert training.runs["synced BN"][1] > training.runs["per-worker BN"][1] + 0.2
    assert demo.group_lab(merge_batch_stats)[1] is training  # memoized
    assert len(starts) == 1
