//! Per-session message queues (offline or beyond the inflight window).
