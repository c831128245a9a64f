//! Observability and operations: the admin HTTP API ([`admin`]), metrics
//! ([`metrics`], Prometheus text and OTLP through [`telemetry`]), systemd
//! notification ([`systemd`]) and `sluice top` ([`top`]).

pub mod top;

pub mod telemetry;

pub mod systemd;

pub mod metrics;

pub mod admin;
