//! # tether-functions
//!
//! The AWS host: thin Lambda entry points (`$connect`, `$disconnect`, the
//! action routes) over [`tether_domain`], a `DynamoStore` behind the store
//! port, and a push adapter on the API Gateway Management API. Only the crate
//! exists so far; the AWS issue fills it.

pub use tether_domain as domain;
