"""One datamodule, many dataset builders."""

from gen_bench.data.arrays import ArrayDataset, StepBatchSampler
from gen_bench.data.datamodule import GenerativeDataModule
from gen_bench.data.spec import DataSource, DataSpec, Splits

__all__ = ["ArrayDataset", "DataSource", "DataSpec", "GenerativeDataModule", "Splits", "StepBatchSampler"]
