//! Rate limits, sans-IO: the caller passes `now` and acts on the answers.
//!
//! Place in the data flow: the server keeps one [`AuthFailureLimiter`] for all listeners and
//! asks it before authenticating a CONNECT (and tells it about every failure); the connection
//! driver keeps a [`TokenBucket`] per client for inbound messages/s and bytes/s, and the tenant
//! keeps one per tenant (built from [`crate::Quotas`]); a refused take means reason 0x96 for
//! messages or a pause of the reader (backpressure) for bytes, as the quota docs say.

mod bucket;
mod failures;

pub use bucket::TokenBucket;
pub use failures::{AuthFailureLimiter, AuthFailureLimits};
