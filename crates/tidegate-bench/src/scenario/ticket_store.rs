//! The TLS session store of `handshake --resume`: rustls' in-memory store with room for as
//! many TLS 1.3 tickets as the run has connections in progress.
//!
//! Place in the data flow: `handshake` puts one [`TicketStore`] in its client configuration;
//! rustls inserts the broker's tickets as each connection reads its CONNACK and takes one per
//! new connection's ClientHello.
//!
//! Why not rustls' `ClientSessionMemoryCache`: it keeps at most 8 tickets per server, which
//! models one device reconnecting. `--concurrency 16` starts more than 8 handshakes between
//! two refills, so a share of them found the store empty and made full handshakes (measured:
//! 88% resumed at 16, 100% at 8). Here each of many devices is meant to hold its own ticket.

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// What is remembered about one server.
#[derive(Debug, Default)]
struct ServerData {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    /// Oldest first.
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// A session store keeping up to `tickets_per_server` TLS 1.3 tickets per server name.
#[derive(Debug)]
pub struct TicketStore {
    tickets_per_server: usize,
    servers: Mutex<HashMap<ServerName<'static>, ServerData>>,
}

impl TicketStore {
    /// A store holding up to `tickets_per_server` tickets per server (at least one).
    pub fn new(tickets_per_server: usize) -> TicketStore {
        TicketStore {
            tickets_per_server: tickets_per_server.max(1),
            servers: Mutex::new(HashMap::new()),
        }
    }

    fn servers(&self) -> MutexGuard<'_, HashMap<ServerName<'static>, ServerData>> {
        // The map stays consistent even if a holder panicked: every edit is a single call.
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// TLS 1.3 tickets held for `name`.
    pub fn tickets(&self, name: &ServerName<'_>) -> usize {
        self.servers().get(name).map_or(0, |s| s.tls13.len())
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.servers().entry(server_name).or_default().kx_hint = Some(group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.servers().get(server_name).and_then(|s| s.kx_hint)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.servers().entry(server_name).or_default().tls12 = Some(value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.servers()
            .get(server_name)
            .and_then(|s| s.tls12.clone())
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        if let Some(s) = self.servers().get_mut(server_name) {
            s.tls12 = None;
        }
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        let mut servers = self.servers();
        let tickets = &mut servers.entry(server_name).or_default().tls13;
        if tickets.len() >= self.tickets_per_server {
            tickets.pop_front();
        }
        tickets.push_back(value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        // The newest ticket: the furthest from expiry.
        self.servers()
            .get_mut(server_name)
            .and_then(|s| s.tls13.pop_back())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_store_has_nothing_to_resume() {
        let store = TicketStore::new(0);
        let name = ServerName::try_from("localhost").unwrap();
        assert_eq!(store.tickets(&name), 0);
        assert!(store.take_tls13_ticket(&name).is_none());
        assert!(store.tls12_session(&name).is_none());
        store.set_kx_hint(name.clone(), NamedGroup::X25519);
        assert_eq!(store.kx_hint(&name), Some(NamedGroup::X25519));
    }
}
