//! postdesk: an email-first shared-inbox helpdesk daemon.
//!
//! The crate is split into a functional core (`subject`, `token`, `classify`,
//! `thread`, `ticket`, `outgoing`, `model`) that never performs I/O or reads
//! the clock, and an imperative shell (`store`, `pipeline`, `source`,
//! `sender`, `ingest`, `daemon`, `cli`) that does. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod agent;
pub mod authres;
pub mod calendar;
pub mod classify;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod html;
pub mod http;
pub mod inbound;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod outgoing;
pub mod pipeline;
pub mod reply;
pub mod report;
pub mod route;
pub mod sender;
pub mod sla;
pub mod source;
pub mod store;
pub mod subject;
pub mod thread;
pub mod ticket;
pub mod token;
pub mod view;
pub mod wire;
