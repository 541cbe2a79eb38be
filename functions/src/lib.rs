//! # tether-functions
//!
//! The AWS host: thin Lambda entry points (`$connect`, `$disconnect`, the
//! action routes) over [`tether_domain`], [`DynamoStore`] behind the store
//! port, and a push adapter on the API Gateway Management API. The store is
//! here; the entry points and the push adapter come with the AWS issue.

pub use tether_domain as domain;

pub mod dynamo;

pub use dynamo::{DynamoStore, TableNames};
