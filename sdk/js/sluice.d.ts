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

// --- Keyed processors: the keyed-processor world of wit/0.2.0/plugin.wit ---

/** The watermark before any event: -2^63. */
export const WATERMARK_MIN: number;

export type TimeDomainName = "event-time" | "processing-time";
export const TimeDomain: { readonly EVENT_TIME: "event-time"; readonly PROCESSING_TIME: "processing-time" };

/** A timer of a key: when it fires (ms since the Unix epoch) and on which clock. */
export interface Timer {
  time: number;
  domain: TimeDomainName;
}

/** `key` as text for a message, as Rust's `escape_ascii` writes it. */
export function escapeKey(key: Uint8Array): string;

/** One key's view of a call. `S` is the key's state, a JSON value. */
export class KeyedContext<S = any> {
  /** The key (the record key's bytes). */
  readonly key: Uint8Array;
  /** The key as text (throws TypeError when it is not UTF-8). */
  keyText(): string;
  /** The key's state (decoded once per call; changed in place, it is written back); undefined when none. */
  readonly state: S | undefined;
  /** Sets the key's state; undefined or null clears it. */
  setState(value: S | undefined | null): void;
  /** Deletes the key's state; its timers stay. */
  clearState(): void;
  setEventTimer(timeMs: number | bigint): void;
  deleteEventTimer(timeMs: number | bigint): void;
  setProcessingTimer(timeMs: number | bigint): void;
  deleteProcessingTimer(timeMs: number | bigint): void;
  /** The watermark before the call's first event (ms). */
  readonly watermark: number;
  /** The host's clock when the call started (ms). */
  readonly now: number;
  /**
   * The row of the daemon's lookup table `table` (`[tables.NAME]`) whose key
   * is `key` (text; bytes such as `ctx.key` are read as UTF-8), parsed from
   * its JSON text; null when the table has no such key. Throws SluiceError
   * with the daemon's text when it has no such table, or when the row is not
   * a JSON object.
   */
  lookup<R extends object = Record<string, any>>(table: string, key: string | Bytes): R | null;
  /** As `lookup`, the row as the JSON text the daemon gives (not parsed); null when none. */
  lookupText(table: string, key: string | Bytes): string | null;
}

/** A keyed processing function with per-key state and timers. */
export class KeyedProcessor<S = any> {
  constructor(config: Config);
  readonly config: Config;
  /** One event of the key `ctx.key`; throwing fails the whole call. */
  process(ctx: KeyedContext<S>, event: Event, out: Output): void;
  /** A timer of the key `ctx.key` fired. Default: nothing. */
  onTimer(ctx: KeyedContext<S>, timer: Timer, out: Output): void;
}
export type KeyedProcessorClass = new (config: Config) => KeyedProcessor<any>;

/** A timer set (`set` true) or deleted, of the call's key `group`. */
export interface TimerChange {
  set: boolean;
  group: number;
  timer: Timer;
}

/** One `process-keyed` call's input, in plain JavaScript. */
export interface KeyedInput {
  keys: Uint8Array[];
  states: (Uint8Array | undefined)[];
  events?: Batch | Iterable<BatchItem>;
  groups?: ArrayLike<number>;
  fired?: { group: number; time: number | bigint; domain: TimeDomainName }[];
  watermark?: bigint;
  now?: bigint;
  /** Answers `ctx.lookup`: the row's JSON text, null/undefined when none; throws SluiceError for an unknown table. */
  tables?: (table: string, key: string) => string | null | undefined;
}

/** What one call returns: the output, the changed states (value undefined deletes), the timer changes in order. */
export interface KeyedResult {
  out: Output;
  updates: { group: number; value: Uint8Array | undefined }[];
  timers: TimerChange[];
}

/** Runs one `process-keyed` call, as the component does; throws SluiceError when it fails. */
export function runKeyed(processor: KeyedProcessor<any>, input: KeyedInput): KeyedResult;

/** The `sluice:plugin/tables@0.2.0` import (what `import * as tables from "sluice:plugin/tables@0.2.0"` gives). */
export interface Tables {
  lookup(table: string, key: string): string | undefined;
}

export function exportKeyedProcessor(
  cls: KeyedProcessorClass,
  host?: Host,
  tables?: Tables,
): {
  configure(config: [string, string][]): void;
  processKeyed(input: any): any;
};

/** The daemon's part for a keyed processor, in memory (for tests). */
export class KeyedHarness<S = any> {
  constructor(
    processor: KeyedProcessorClass | KeyedProcessor<S>,
    config?: Config | Iterable<[string, string]> | Record<string, string>,
    options?: {
      watermarkDelay?: number;
      repeatCalls?: boolean;
      /** Lookup tables for `ctx.lookup`: name to rows by key (see `table`). */
      tables?: Record<string, TableRows> | Map<string, TableRows>;
    },
  );
  readonly processor: KeyedProcessor<S>;
  watermarkDelay: number;
  repeatCalls: boolean;
  /** Everything emitted so far. */
  output: Output;
  /** Calls made so far (a repeat counted once). */
  readonly calls: number;
  push(key: string | Bytes, value: string | Bytes, timestampMs?: number, headers?: [string, string | Bytes][]): this;
  readonly watermark: number;
  readonly now: number;
  run(): void;
  advanceWatermark(timeMs: number): void;
  setNow(nowMs: number): void;
  finish(): void;
  takeOutput(): Output;
  state(key: string | Bytes): S | undefined;
  stateBytes(key: string | Bytes): Uint8Array | undefined;
  setStateBytes(key: string | Bytes, data: string | Bytes | undefined | null): void;
  /** Every key (as text) with its state bytes as text. */
  states(): Record<string, string>;
  timers(key: string | Bytes): Timer[];
  timerCount(): number;
  /**
   * Gives the processor a lookup table `name` (as a `[tables.NAME]` of the
   * daemon's config), replacing one of that name: its rows by key, each an
   * object (written as JSON) or the JSON text of one. Returns the harness.
   */
  table(name: string, rows: TableRows): this;
}

/** A lookup table's rows by key: each row an object, or its JSON text. */
export type TableRows =
  | Record<string, object | string>
  | Map<string, object | string>
  | Iterable<[string, object | string]>;
