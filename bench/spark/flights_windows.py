#!/usr/bin/env python3
"""The flights windows job (examples/flights/windows.toml) in PySpark Structured Streaming.

Same input (the NDJSON flights, read as a file stream), same filter as the
flights_delay plugin (plugins/flights-delay/src/lib.rs: a flight is carrier, flight
(an integer), origin, dest, event_time present and typed; dep_delay null = cancelled,
dropped; kept when dep_delay >= min_delay = 15), same 1-hour tumbling windows per
carrier on event_time, same 10-minute watermark, append mode, same aggregates
(count as delayed, avg(dep_delay) as avg_dep_delay, max(dep_delay) as
max_dep_delay). Output: JSON lines {window_start, window_end, key, delayed,
avg_dep_delay, max_dep_delay}, as sluice writes them.

Usage: flights_windows.py INPUT_DIR OUTPUT_DIR CHECKPOINT_DIR
INPUT_DIR holds, in modification-time order: the flights file, then two one-line
"flush" files whose event times lie far past 2013 (carrier "~flush"). Spark, unlike
sluice, does not close the open windows when the input ends: in append mode a window
is written only once the watermark passes its end, and the watermark moves between
micro-batches. With maxFilesPerTrigger = 1 the flights are batch 1, flush file 1
(batch 2) moves the watermark past every 2013 window, and batch 3 writes them. The
"~flush" window is dropped by the comparison. Trigger.AvailableNow: the query stops
when the input is processed.

Prints one JSON line to stdout: {"query_s": seconds from start() to the end}.
"""

import json
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

MIN_DELAY = 15.0

SCHEMA = T.StructType([
    T.StructField("carrier", T.StringType()),
    T.StructField("flight", T.LongType()),
    T.StructField("origin", T.StringType()),
    T.StructField("dest", T.StringType()),
    T.StructField("dep_delay", T.DoubleType()),
    T.StructField("arr_delay", T.DoubleType()),
    T.StructField("event_time", T.StringType()),
])


def main():
    input_dir, output_dir, checkpoint_dir = sys.argv[1:4]
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("sluice-bench-flights-windows")
        .config("spark.sql.session.timeZone", "UTC")
        # local[2] and sluice's partitions = 2: 2 shuffle/state partitions, not the
        # default 200 (which costs Spark ~100 state-store tasks per core per batch).
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")

    flights = (
        spark.readStream.schema(SCHEMA)
        .option("maxFilesPerTrigger", 1)
        .option("mode", "PERMISSIVE")
        .json(input_dir)
    )
    # The plugin's rules: a record of the wrong shape is rejected (dead-letter: not
    # in the windows), a cancelled flight (dep_delay null) dropped, then the threshold.
    delayed = (
        flights.where(
            F.col("carrier").isNotNull() & F.col("flight").isNotNull()
            & F.col("origin").isNotNull() & F.col("dest").isNotNull()
            & F.col("event_time").isNotNull()
        )
        .where(F.col("dep_delay").isNotNull() & (F.col("dep_delay") >= MIN_DELAY))
        .select(
            "carrier", "flight", "origin", "dest", "dep_delay", "arr_delay", "event_time",
            F.to_timestamp("event_time").alias("ts"),
        )
    )
    windows = (
        delayed.withWatermark("ts", "10 minutes")
        .groupBy(F.window("ts", "1 hour"), F.col("carrier"))
        .agg(
            F.count(F.lit(1)).alias("delayed"),
            F.avg("dep_delay").alias("avg_dep_delay"),
            F.max("dep_delay").alias("max_dep_delay"),
        )
        .select(
            F.date_format("window.start", "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").alias("window_start"),
            F.date_format("window.end", "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").alias("window_end"),
            F.col("carrier").alias("key"),
            "delayed", "avg_dep_delay", "max_dep_delay",
        )
    )
    t0 = time.monotonic()
    query = (
        windows.writeStream.format("json").outputMode("append")
        .option("path", output_dir)
        .option("checkpointLocation", checkpoint_dir)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    query_s = time.monotonic() - t0
    spark.stop()
    print(json.dumps({"query_s": query_s}), flush=True)


if __name__ == "__main__":
    main()
