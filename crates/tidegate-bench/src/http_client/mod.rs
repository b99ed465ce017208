//! The HTTP side of the bench tool: just enough of an HTTP/1.1 client to load Tidegate's REST
//! publish and SSE subscribe endpoints.
//!
//! Place in the data flow: `scenario::http` → [`HttpConn`] (one keep-alive HTTP/1.1
//! connection, hyper's client state machine over a socket we open) → gateway. Request bodies
//! are built by [`body`] into a reused buffer; SSE responses are cut into events by
//! [`sse::SseParser`] and their JSON read by [`body::SseMessage`].
//!
//! Why hyper's bare connection API and not a pooled client: the scenario decides how many
//! connections exist and which request goes on which, exactly as the MQTT scenarios do; a pool
//! would hide that (and open connections of its own when one is busy).

pub mod body;
pub mod conn;
pub mod sse;
pub mod target;

pub use conn::{HttpConn, HttpError};
pub use target::HttpTarget;
