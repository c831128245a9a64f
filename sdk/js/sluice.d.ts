// Types of the sluice JavaScript plugin SDK (sluice.js).

/** Bytes or text (written as UTF-8). */
export type Bytes = Uint8Array | ArrayBufferView | ArrayBuffer;

/** Thrown in a constructor it refuses the config; in `process` it fails the batch. */
export class SluiceError extends Error {
  constructor(message: string);
}

/** Bytes as UTF-8 text; throws TypeError when they are not UTF-8. */
export function decodeText(bytes: Uint8Array): string;

/** A stage's `config` table, as (name, value) string pairs. */
export class Config {
  constructor(pairs?: Iterable<[string, string]> | Map<string, string> | Record<string, string>);
  readonly map: Map<string, string>;
  get(name: string): string | undefined;
  get<T>(name: string, fallback: T): string | T;
  has(name: string): boolean;
  /** All pairs, sorted by name. */
  entries(): [string, string][];
  int(name: string): number | undefined;
  int<T>(name: string, fallback: T): number | T;
  float(name: string): number | undefined;
  float<T>(name: string, fallback: T): number | T;
  bool(name: string): boolean | undefined;
  bool<T>(name: string, fallback: T): boolean | T;
}

/** A header of an event, as the host sends it. */
export interface Header {
  index: number;
  name: string;
  value: Uint8Array;
}

/** One event as plain data. */
export interface EventRecord {
  value: Uint8Array;
  key: Uint8Array | null;
  timestampMs: number;
  headers: [string, Uint8Array][];
}

/** What a test batch is built from: a value, or a record with optional fields. */
export type BatchItem =
  | string
  | Uint8Array
  | {
      value: string | Bytes;
      key?: string | Bytes | null;
      timestampMs?: number | bigint;
      headers?: [string, string | Bytes][];
    };

/** One event of a batch: a view of its row. */
export class Event {
  readonly batch: Batch;
  /** Its position in the batch (0-based). */
  readonly index: number;
  /** Its payload bytes (a view into the batch: copy it to keep it). */
  readonly value: Uint8Array;
  /** The key, or null when it has none. */
  readonly key: Uint8Array | null;
  /** Event time in ms since the Unix epoch (UTC). */
  readonly timestampMs: number;
  /** Event time as the host sends it. */
  readonly timestamp: bigint;
  /** [name, value] pairs, in order. */
  readonly headers: [string, Uint8Array][];
  /** The value as text; throws TypeError when not UTF-8. */
  text(): string;
  /** The value parsed as JSON; throws when it is not JSON. */
  json(): any;
  record(): EventRecord;
}

/** The packed columns of a batch: the WIT `event-batch`. */
export interface Columns {
  values: Uint8Array;
  valueEnds: Uint32Array;
  keys: Uint8Array;
  keyEnds: Uint32Array;
  timestamps: BigInt64Array;
  headers: Header[];
}

/** A micro-batch of events, in order. */
export class Batch implements Iterable<Event> {
  constructor(items?: Iterable<BatchItem>);
  static fromColumns(columns: Partial<Columns> & { values: Bytes; valueEnds: ArrayLike<number> }, check?: boolean): Batch;
  static fromLines(text: string | Uint8Array, timestampMs?: number): Batch;
  readonly values: Uint8Array;
  readonly valueEnds: Uint32Array;
  readonly keys: Uint8Array;
  readonly keyEnds: Uint32Array;
  readonly timestamps: BigInt64Array;
  readonly headers: Header[];
  readonly length: number;
  at(index: number): Event | undefined;
  [Symbol.iterator](): Iterator<Event>;
  valuesList(): Uint8Array[];
  texts(): string[];
  json(): any[];
  records(): EventRecord[];
  headersOf(index: number): [string, Uint8Array][];
}

/** A refused input event. */
export interface Rejection {
  index: number;
  reason: string;
}

/** What a plugin returns for one batch. */
export class Output {
  constructor(sizeHint?: number);
  readonly rejected: Rejection[];
  readonly length: number;
  emit(
    value: string | Bytes,
    key?: string | Bytes | null,
    timestampMs?: number | bigint,
    headers?: [string, string | Bytes][],
  ): void;
  emitJson(
    value: unknown,
    key?: string | Bytes | null,
    timestampMs?: number | bigint,
    headers?: [string, string | Bytes][],
  ): void;
  forward(event: Event): void;
  reject(event: Event | number, reason: string): void;
  toWit(): { events: Columns; rejected: Rejection[] };
  readonly events: Batch;
  values(): Uint8Array[];
  texts(): string[];
  json(): any[];
  records(): EventRecord[];
}

export type Level = "trace" | "debug" | "info" | "warn" | "error";

/** Writes to the daemon's log; off Wasm, to stderr. */
export const log: ((level: Level, message: string) => void) & {
  trace(message: string): void;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
};

/** A processor: built from the config, then `process` per batch. */
export interface Processor {
  process(batch: Batch, out: Output): void;
}
export type ProcessorClass = new (config: Config) => Processor;

/** The host interface (`import * as host from "sluice:plugin/host@0.1.0"`). */
export interface Host {
  log(level: Level, message: string): void;
}

export function exportProcessor(
  cls: ProcessorClass,
  host?: Host,
): {
  configure(config: [string, string][]): void;
  process(batch: Columns): { events: Columns; rejected: Rejection[] };
};

/** A user-defined window aggregate; `encode`/`decode` default to JSON. */
export class Aggregator<S = any> {
  constructor(config: Config);
  readonly config: Config;
  create(): S;
  add(state: S, event: Event): S;
  merge(a: S, b: S): S;
  finish(state: S): unknown;
  encode(state: S): Uint8Array;
  decode(bytes: Uint8Array): S;
}
export type AggregatorClass = new (config: Config) => Aggregator<any>;

export function exportAggregator(
  cls: AggregatorClass,
  host?: Host,
): {
  configure(config: [string, string][]): void;
  create(): Uint8Array;
  accumulate(states: Uint8Array[], batch: Columns, groups: Uint32Array): Uint8Array[];
  merge(a: Uint8Array, b: Uint8Array): Uint8Array;
  finish(states: Uint8Array[]): string[];
};

/** Runs one batch through a processor as the host would (for tests). */
export function run(
  processor: ProcessorClass | Processor,
  batch: Batch | Iterable<BatchItem>,
  config?: Config | Iterable<[string, string]> | Record<string, string>,
): Output;

/** One window over every event, through encode/decode; its result as JSON text (for tests). */
export function aggregate(
  aggregator: AggregatorClass | Aggregator<any>,
  batch: Batch | Iterable<BatchItem>,
  config?: Config | Iterable<[string, string]> | Record<string, string>,
): string;
