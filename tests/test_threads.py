"""`--threads` caps every CPU thread pool a command uses, not only torch's."""

import faiss
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from jobs.threads import limit_cpu_threads


def test_limit_cpu_threads_caps_torch_faiss_and_blas():
    torch_before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        with threadpool_limits(limits=None):  # restores every BLAS/OpenMP pool's own count on exit
            limit_cpu_threads(1)
            assert torch.get_num_threads() == 1
            assert faiss.omp_get_max_threads() == 1
            blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
            assert blas and all(n == 1 for n in blas)  # numpy's BLAS is loaded: the cap reached it
    finally:
        torch.set_num_threads(torch_before)
        faiss.omp_set_num_threads(faiss_before)
