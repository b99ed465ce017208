//! Argon2 password hashes in PHC string form (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
//!
//! Place in the data flow: `tidegate passwd` calls [`hash_password`] to make the
//! `password_hash` of a `[[tenants.users]]` entry; configuration validation calls [`parse_phc`];
//! [`crate::Tenant::authenticate`] calls [`verify_password`] for a CONNECT with a username and
//! password.
//!
//! **Cost**: hashing and verifying are deliberately slow (argon2id with 19 MiB of memory and two
//! passes: tens of milliseconds in a release build, more in debug). Never call them on an async
//! executor thread: the server runs authentication in `spawn_blocking` (or a dedicated pool) so
//! one slow login cannot stall every connection sharing that thread.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

/// Memory cost of new hashes, KiB (the OWASP recommendation for argon2id, also the crate's
/// default: the issue fixes `m=19456,t=2,p=1`).
pub const M_COST_KIB: u32 = 19 * 1024;
/// Passes over the memory of new hashes.
pub const T_COST: u32 = 2;
/// Lanes of new hashes.
pub const P_COST: u32 = 1;

/// Why a password could not be hashed or a stored hash is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The text is not a PHC string (`$id$v=..$params$salt$hash`).
    #[error("not a PHC string ($argon2id$v=19$m=..,t=..,p=..$salt$hash): {0}")]
    NotPhc(String),
    /// A PHC string of another algorithm (bcrypt, scrypt, pbkdf2...): only argon2 is supported.
    #[error(
        "unknown hash format {0:?}: only argon2id (or argon2i/argon2d) PHC strings are accepted; `tidegate passwd` makes one"
    )]
    UnknownAlgorithm(String),
    /// An argon2 PHC string whose parameters, salt or output are missing or out of range.
    #[error("invalid argon2 hash: {0}")]
    BadArgon2(String),
    /// The hasher failed (the system random source for the salt, in practice).
    #[error("cannot hash the password: {0}")]
    Hashing(String),
}

/// Hashes `password` with argon2id (`m=19456,t=2,p=1`, random 16-byte salt) into a PHC
/// string. CPU- and memory-heavy: see the module docs.
pub fn hash_password(password: &[u8]) -> Result<String, PasswordError> {
    hash_with(password, M_COST_KIB, T_COST, P_COST)
}

/// Hashes with explicit costs; tests use small ones to stay fast in debug builds.
pub(crate) fn hash_with(
    password: &[u8],
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
) -> Result<String, PasswordError> {
    let params = Params::new(m_cost, t_cost, p_cost, None)
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    hasher
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// Parses and checks a stored hash: a PHC string of argon2id, argon2i or argon2d with valid
/// parameters, a salt and an output. Used by configuration validation, and once per user when a
/// tenant is compiled so that verification does not parse again.
pub fn parse_phc(phc: &str) -> Result<PasswordHash, PasswordError> {
    let hash = PasswordHash::new(phc).map_err(|e| PasswordError::NotPhc(e.to_string()))?;
    if Algorithm::try_from(hash.algorithm.as_str()).is_err() {
        return Err(PasswordError::UnknownAlgorithm(
            hash.algorithm.as_str().to_owned(),
        ));
    }
    if let Some(version) = hash.version {
        Version::try_from(version).map_err(|e| PasswordError::BadArgon2(e.to_string()))?;
    }
    Params::try_from(&hash).map_err(|e| PasswordError::BadArgon2(e.to_string()))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(PasswordError::BadArgon2("salt or hash missing".into()));
    }
    Ok(hash)
}

/// True when `password` matches the parsed hash (constant-time comparison of the outputs, done
/// by the argon2 crate). CPU- and memory-heavy: see the module docs.
pub fn verify_password(hash: &PasswordHash, password: &[u8]) -> bool {
    Argon2::default().verify_password(password, hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small costs: the algorithm is the same, debug-build tests stay fast.
    fn cheap(password: &[u8]) -> String {
        hash_with(password, 64, 1, 1).unwrap()
    }

    #[test]
    fn hash_has_the_issue_parameters_and_verifies() {
        let phc = hash_password(b"s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = parse_phc(&phc).unwrap();
        assert!(verify_password(&parsed, b"s3cret"));
        assert!(!verify_password(&parsed, b"s3cret "));
    }

    #[test]
    fn salts_differ_between_hashes() {
        assert_ne!(cheap(b"same"), cheap(b"same"));
    }

    #[test]
    fn verify_honours_the_parameters_stored_in_the_hash() {
        let phc = cheap(b"pw");
        assert!(phc.contains("m=64,t=1,p=1"), "{phc}");
        let parsed = parse_phc(&phc).unwrap();
        assert!(verify_password(&parsed, b"pw"));
        assert!(!verify_password(&parsed, b"PW"));
        assert!(!verify_password(&parsed, b""));
    }

    #[test]
    fn unknown_formats_are_refused_with_a_clear_message() {
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        assert!(matches!(parse_phc(bcrypt), Err(PasswordError::NotPhc(_))));
        let scrypt = "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E";
        let err = parse_phc(scrypt).unwrap_err();
        assert!(matches!(err, PasswordError::UnknownAlgorithm(ref a) if a == "scrypt"));
        assert!(err.to_string().contains("unknown hash format"), "{err}");
        assert!(matches!(
            parse_phc("plain-text-password"),
            Err(PasswordError::NotPhc(_))
        ));
    }

    #[test]
    fn incomplete_argon2_strings_are_refused() {
        let phc = cheap(b"pw");
        let (without_hash, _) = phc.rsplit_once('$').unwrap();
        assert!(parse_phc(without_hash).is_err());
        let bad_params = phc.replace("m=64", "m=1");
        assert!(matches!(
            parse_phc(&bad_params),
            Err(PasswordError::BadArgon2(_))
        ));
    }
}
