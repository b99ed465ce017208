//! Whole-tenant commands and readings for the admin API and `/metrics`: disconnect every client
//! of a tenant, drop its sessions and retained messages, and the per-tenant counters.
//!
//! Place in the data flow: `admin API (tenant deleted or changed) / metrics scrape -> engine
//! task -> Broker (this module) -> Output`. The server deletes a tenant with
//! [`Broker::disconnect_tenant`] (reason 0x87 Not authorized) and then
//! [`Broker::drop_tenant_sessions`].

use super::lifecycle::WillFate;
use super::stats::DisconnectSide;
use super::tenant::TenantCounters;
use super::{Broker, Phase};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tidegate_protocol::{Disconnect, Packet, ReasonCode};

impl Broker {
    /// Closes every connection of `tenant`: MQTT 5 clients get DISCONNECT with `reason` first;
    /// wills are published as for any server-side close; sessions stay (see
    /// [`Broker::drop_tenant_sessions`]). Returns how many connections were closed.
    pub fn disconnect_tenant(&mut self, now: Instant, tenant: &str, reason: ReasonCode) -> usize {
        let Some(idx) = self.find_tenant(tenant) else {
            return 0;
        };
        let mut conns: Vec<_> = self
            .conns
            .iter()
            .filter_map(|(&conn, c)| match &c.phase {
                Phase::Connected(st) if st.tenant == idx => Some(conn),
                _ => None,
            })
            .collect();
        // Deterministic order for the shell and the tests.
        conns.sort_unstable();
        for &conn in &conns {
            self.count_disconnect(DisconnectSide::Server, reason);
            if self.connected(conn).is_some_and(|c| c.version.is_v5()) {
                self.send(conn, Packet::Disconnect(Disconnect::with_reason(reason)));
            }
            self.end_connection(now, conn, WillFate::Publish, true);
        }
        conns.len()
    }

    /// Drops every session and retained message of `tenant` (and from the store), and its
    /// `$SYS` values. Clients
    /// still connected are disconnected first with 0x98 (Administrative action). Pending
    /// wills are published as the sessions end, to the tenant's subscribers still there.
    /// Returns how many sessions were dropped.
    pub fn drop_tenant_sessions(&mut self, now: Instant, tenant: &str) -> usize {
        let Some(idx) = self.find_tenant(tenant) else {
            return 0;
        };
        self.disconnect_tenant(now, tenant, ReasonCode::AdministrativeAction);
        let keys: Vec<_> = self.tenant(idx).by_client_id.values().copied().collect();
        for &key in &keys {
            self.end_session(now, key);
        }
        let topics = self.tenant(idx).retained.topics();
        for topic in topics {
            self.tenant_mut(idx).retained.remove(&topic);
            self.forget_stored_retained(idx, &topic);
        }
        self.tenant_mut(idx).sys.clear();
        keys.len()
    }

    /// Counters and gauges of every tenant the broker has seen, by tenant id. Costs
    /// O(tenants) plus nothing per connection: the gauges are kept per tenant.
    pub fn tenant_stats(&self) -> BTreeMap<Arc<str>, TenantCounters> {
        self.tenants
            .iter()
            .map(|t| {
                let counters = TenantCounters {
                    connections: t.connections,
                    sessions: t.client_sessions(),
                    subscriptions: t.router.len(),
                    retained: t.retained.len(),
                    retained_bytes: t.retained.bytes(),
                    ..t.counters
                };
                (t.id.clone(), counters)
            })
            .collect()
    }
}
