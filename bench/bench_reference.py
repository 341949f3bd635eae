"""Time the course's reference batch norms against PyTorch's own, and print a table.

    python bench/bench_reference.py [--device cuda] [--rounds 15]

Train mode, float32. Rows: the NumPy reference (CPU only), the from-scratch torch
module (``bn_course.reference.torch``) and native ``torch.nn.BatchNorm1d/2d``, each
forward and forward+backward. Each time is the median over ``--rounds`` rounds; the
rounds interleave the candidates so that all of them see the same machine state (the
times of large fresh allocations vary a lot from one moment to the next on CPU).

Byte model for GB/s (the traffic of an ideal fused kernel, per-channel vectors
ignored): forward reads x and writes y (2 tensors); forward+backward adds reading x
and dout and writing dx (5 tensors in all).

The NumPy forward+backward for (N, C, H, W) runs ``batchnorm2d_forward`` on x and
``batchnorm_backward_compact`` on a channels-last (N*H*W, C) copy of x and dout,
made once before timing (the compact backward takes (N, D) input).
"""

import argparse
import os
import statistics
import timeit

import numpy as np
import torch

from bn_course.reference import numpy as ref_np
from bn_course.reference import torch as ref_torch

SHAPES = [(256, 1024), (4096, 1024), (64, 64, 32, 32)]


def median_ms(candidates, rounds, device):
    """{name: median ms per call} for zero-argument callables, timed in interleaved rounds."""
    def timed(fn, number):
        def run():
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
        return timeit.timeit(run, number=number) / number

    numbers = {}
    for name, fn in candidates.items():  # warm up and pick calls per round (>= ~20 ms)
        timed(fn, 3)
        numbers[name] = max(1, int(0.02 / timed(fn, 3)))
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            samples[name].append(timed(fn, numbers[name]))
    return {name: 1e3 * statistics.median(times) for name, times in samples.items()}


def numpy_candidates(x, dout, gamma, beta):
    """NumPy forward and forward+backward on CPU copies of the inputs."""
    x, dout = x.cpu().numpy(), dout.cpu().numpy()
    gamma, beta = gamma.cpu().numpy(), beta.cpu().numpy()
    if x.ndim == 2:
        def forward():
            return ref_np.batchnorm_forward(x, gamma, beta)
        x_rows, dout_rows = x, dout
    else:
        def forward():
            return ref_np.batchnorm2d_forward(x, gamma, beta)
        channels = x.shape[1]
        x_rows = np.ascontiguousarray(x.transpose(0, 2, 3, 1).reshape(-1, channels))
        dout_rows = np.ascontiguousarray(dout.transpose(0, 2, 3, 1).reshape(-1, channels))

    def forward_backward():
        forward()
        return ref_np.batchnorm_backward_compact(dout_rows, x_rows, gamma)

    return {"numpy fwd": forward, "numpy fwd+bwd": forward_backward}


def torch_candidates(prefix, module, x, dout):
    """Forward (no graph) and forward+backward (grads of x, weight, bias) of a module."""
    x_leaf = x.clone().requires_grad_()
    inputs = (x_leaf, module.weight, module.bias)

    def forward():
        with torch.no_grad():
            return module(x)

    def forward_backward():
        return torch.autograd.grad(module(x_leaf), inputs, dout)

    return {f"{prefix} fwd": forward, f"{prefix} fwd+bwd": forward_backward}


def bench_shape(shape, device, rounds):
    torch.manual_seed(0)
    x = torch.randn(shape, device=device)
    dout = torch.randn(shape, device=device)
    channels = shape[1]
    ours = (ref_torch.BatchNorm1d if len(shape) == 2 else ref_torch.BatchNorm2d)(channels)
    native = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(channels)
    with torch.no_grad():
        native.weight.uniform_(0.5, 1.5)
        native.bias.normal_()
    ours.load_state_dict(native.state_dict())
    ours.to(device)
    native.to(device)

    candidates = {}
    if device == "cpu":
        candidates.update(numpy_candidates(x, dout, native.weight.detach(), native.bias.detach()))
    candidates.update(torch_candidates("scratch torch", ours, x, dout))
    candidates.update(torch_candidates("native torch", native, x, dout))
    times = median_ms(candidates, rounds, device)

    bytes_per_tensor = x.numel() * x.element_size()
    rows = []
    for name, ms in times.items():
        kind = name.rsplit(" ", 1)[1]
        tensors = 2 if kind == "fwd" else 5
        ratio = ms / times[f"native torch {kind}"]
        gbps = tensors * bytes_per_tensor / (ms * 1e-3) / 1e9
        rows.append((str(shape), name, ms, ratio, gbps))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per candidate")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"torch {torch.__version__}, numpy {np.__version__}, {where}, "
          f"torch threads: {torch.get_num_threads()}, float32, train mode")
    load, cores = os.getloadavg()[0], os.cpu_count()
    if load > cores / 2:
        print(f"warning: load average {load:.1f} on {cores} cores: other work skews these times")
    print(f"{'shape':<18} {'candidate':<22} {'median ms':>10} {'x native':>9} {'GB/s':>7}")
    for shape in SHAPES:
        for shape_text, name, ms, ratio, gbps in bench_shape(shape, args.device, args.rounds):
            print(f"{shape_text:<18} {name:<22} {ms:>10.3f} {ratio:>9.2f} {gbps:>7.1f}")


if __name__ == "__main__":
    main()
