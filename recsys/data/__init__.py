"""Datasets: the canonical format, importers and the synthetic shop generator."""

from recsys.data.dataset import Dataset, ImportReport
from recsys.data.importers import import_recbole_movielens, import_recbole_sequential, import_table
from recsys.data.synthetic import generate_shop

__all__ = [
    "Dataset",
    "ImportReport",
    "generate_shop",
    "import_recbole_movielens",
    "import_recbole_sequential",
    "import_table",
]
