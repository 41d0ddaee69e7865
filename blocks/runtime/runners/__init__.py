"""Task runners: the base protocol, sequential and thread runners (`_base`), Dask (`_dask`, and
`_dask_worker` for what runs on a Dask worker). Public names are exported by `blocks.runtime`."""
