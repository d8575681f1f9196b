//! Adapters between the outside world's formats and the core's types: raw
//! mail to [`crate::core::model::InboundMessage`] ([`inbound`], [`html`]),
//! the TOML file to [`crate::core::settings::Settings`] ([`config`]), the
//! store and its backends ([`store`]), and backfill input files ([`ingest`]).

pub mod config;
pub mod html;
pub mod inbound;
pub mod ingest;
pub mod intent;
pub mod search;
pub mod store;
