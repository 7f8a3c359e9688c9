"""Arrow record batches → ``PREFIX-SSSSS-of-NNNNN.parquet`` shards, summarised as written.

pyarrow's ``ParquetWriter`` writes into Beam's file handle (a ``pyarrow.PythonFile`` over the
``shard_sink.SummingFile``), so every byte is counted and checksummed on its way out and the
manifest needs no read-back, as for TFRecord shards.

Row groups: whole batches are buffered until they hold ``ROW_GROUP_BYTES`` of Arrow data, then
written as one row group. Parquet readers (DuckDB, BigQuery) split work and skip data by row group,
and each costs footer metadata per column, so a row group per encode batch would be far too small
for pooled vectors alone (64 records of 4 KiB); 64 records of 512-token sequence outputs already pass
the limit, and go out as they come. Memory stays bounded: a shard holds less than the limit plus one
batch.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.outputs.shard_sink import ShardHandle, SummarizedShardSink

__all__ = ["ROW_GROUP_BYTES", "ParquetShardSink", "ParquetShardWriter"]

ROW_GROUP_BYTES = 64 * 1024 * 1024


class ParquetShardWriter:
    """Record batches → one Parquet file in ``file`` (a writable file object), a row group per
    ``row_group_bytes`` of whole batches; ``close`` writes the footer and closes ``file``."""

    def __init__(self, file, arrow_schema: pa.Schema, options: dict,
                 row_group_bytes: int = ROW_GROUP_BYTES) -> None:
        self._stream = pa.PythonFile(file, mode="w")
        self._writer = pq.ParquetWriter(self._stream, arrow_schema, **options)
        self._row_group_bytes = row_group_bytes
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= self._row_group_bytes:
            self._write_row_group()

    def _write_row_group(self) -> None:
        if self._pending:
            table = pa.Table.from_batches(self._pending)
            self._writer.write_table(table, row_group_size=table.num_rows)
            self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        self._write_row_group()
        self._writer.close()
        self._stream.close()  # closes the file under it


class _ParquetShard(ShardHandle):
    def __init__(self, temp_path: str, arrow_schema: pa.Schema, options: dict, row_group_bytes: int) -> None:
        super().__init__(temp_path)
        self.writer = ParquetShardWriter(self.file, arrow_schema, options, row_group_bytes)

    def finish(self) -> None:
        self.writer.close()


class ParquetShardSink(SummarizedShardSink):
    """Record batches of ``arrow_schema`` → Parquet shards, as ``pyarrow.parquet`` reads them.

    A shard that receives no batch (``num_shards`` above the batches) is a valid file of no rows.
    ``options`` are ``ParquetWriter``'s (``parquet_encoding.writer_options``); the file itself is
    never compressed around the Parquet format.
    """

    def __init__(self, file_path_prefix: str, file_name_suffix: str, num_shards: int, arrow_schema: pa.Schema,
                 options: dict, row_group_bytes: int = ROW_GROUP_BYTES) -> None:
        super().__init__(file_path_prefix, file_name_suffix, num_shards)
        self._arrow_schema = arrow_schema
        self._options = dict(options)
        self._row_group_bytes = row_group_bytes

    def open(self, temp_path: str) -> _ParquetShard:
        return _ParquetShard(temp_path, self._arrow_schema, self._options, self._row_group_bytes)

    def write_record(self, file_handle: _ParquetShard, value: pa.RecordBatch) -> None:
        """Writes a batch of rows; ``records`` counts the rows."""
        file_handle.writer.write(value)
        file_handle.records += value.num_rows
