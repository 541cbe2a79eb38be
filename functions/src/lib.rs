//! # tether-functions
//!
//! The AWS host: thin Lambda entry points over [`tether_domain`],
//! [`DynamoStore`] behind the store port, and [`ApiGatewayPush`] (the
//! Management API) behind the push port.
//!
//! ## The functions, and why four
//!
//! | binary | API | routes |
//! |---|---|---|
//! | `tether-connect` | WebSocket | `$connect` |
//! | `tether-disconnect` | WebSocket | `$disconnect` |
//! | `tether-message` | WebSocket | `$default`, which receives every action |
//! | `tether-http` | HTTP | `POST /api/ticket`, `POST /api/pair` |
//!
//! (`tether-admin` is not a Lambda: it mints users from a machine with AWS
//! credentials, see `infra/mint-user.sh`.)
//!
//! - **One function for every action.** Every action runs the same
//!   [`Domain::handle_frame`](tether_domain::Domain::handle_frame), which
//!   parses the frame, checks the caller and answers unknown actions
//!   itself. A function per action would be the same binary many times:
//!   more cold starts (each function warms up on its own), more to deploy,
//!   nothing gained. So the WebSocket API has a single message route,
//!   `$default` (the route selection expression `$request.body.action` must
//!   still be set, and a non-JSON frame lands there too); adding an action
//!   to the protocol needs no change to the template.
//! - **`$connect` and `$disconnect` apart** from messages: they take other
//!   events and answer differently (a refused `$connect` is an HTTP status),
//!   and their invocation counts and errors show on their own in the
//!   metrics. Their permissions are the same as the message function's.
//! - **The HTTP API apart**: a different event type (HTTP API payload 2.0)
//!   and the only function without `execute-api:ManageConnections`.
//!
//! ## Replies: the integration response
//!
//! A frame's reply is the message function's return value. The `$default`
//! route is two-way (a route response with the key `$default`, the only
//! key WebSocket APIs allow), so API Gateway sends the body back on the
//! socket. That saves a Management API round trip (and its latency and
//! failure mode) per frame; only pushes to *other* connections (events,
//! fan-out) go through `PostToConnection`. `$connect`'s response decides the
//! upgrade, and `$disconnect`'s is ignored.
//!
//! ## Cold start and configuration
//!
//! [`runtime`] reads the configuration ([`config`]) and builds the SDK
//! clients once per cold start; a missing variable fails the cold start.
//! The handlers ([`handlers`]) are plain `async fn(event, &Deps)`, so the
//! tests call them with API Gateway's event JSON, a `DynamoStore` on moto
//! and a recording push port.

pub use tether_domain as domain;

pub mod config;
pub mod dynamo;
pub mod handlers;
pub mod push;
pub mod runtime;

pub use dynamo::{DynamoStore, TableNames};
pub use handlers::Deps;
pub use push::ApiGatewayPush;
