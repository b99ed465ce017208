//! The live set of tenants (issue 7), shared by the connection tasks (authentication) and the
//! admin API (tenant create / update / delete).
//!
//! Place in the data flow: `config [[tenants]] / admin API --replace--> TenantRegistry
//! --current()--> connection task: Tenants::authenticate on CONNECT`. The set is immutable
//! once built ([`Tenants`] is compiled: hashes parsed, ACLs compiled, keys loaded); a change
//! builds a new set and swaps the pointer, so a CONNECT in progress keeps the set it started
//! with and new connections see the change at once.

use std::sync::{Arc, PoisonError, RwLock};
use tidegate_auth::Tenants;

/// The tenants in force.
#[derive(Debug)]
pub(crate) struct TenantRegistry {
    current: RwLock<Arc<Tenants>>,
}

impl TenantRegistry {
    /// A registry holding `tenants`.
    pub(crate) fn new(tenants: Tenants) -> TenantRegistry {
        TenantRegistry {
            current: RwLock::new(Arc::new(tenants)),
        }
    }

    /// The set in force now.
    pub(crate) fn current(&self) -> Arc<Tenants> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the set (returns the previous one).
    pub(crate) fn replace(&self, tenants: Tenants) -> Arc<Tenants> {
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *guard, Arc::new(tenants))
    }
}
