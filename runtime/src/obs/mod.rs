//! Observability and operations: the admin HTTP API ([`admin`]), metrics
//! ([`metrics`], Prometheus text and OTLP through [`telemetry`]), systemd
//! notification ([`systemd`]), `sluice top` ([`top`]) and taps on the
//! records passing a point of a pipeline ([`tap`]).

pub mod top;

pub mod telemetry;

pub mod systemd;

pub mod metrics;

pub mod admin;

pub mod tap;
