"""One CPU thread budget for a command: torch, FAISS's OpenMP and the BLAS under numpy."""

from __future__ import annotations


def limit_cpu_threads(threads: int) -> None:
    """Run torch, FAISS and BLAS on at most `threads` threads each, for the rest of the process.

    Setting torch's alone (what `--threads` used to do) left FAISS and BLAS on every core: validation and
    evaluation search and score on them, so two `--threads 1` runs side by side oversubscribed the machine."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(threads)
    threadpool_limits(limits=threads)
    torch.set_num_threads(threads)
