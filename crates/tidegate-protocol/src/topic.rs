//! Topic name and topic filter rules (spec section 4.7), shared by the codec (PUBLISH topics
//! must not hold wildcards) and the core (SUBSCRIBE filters, matching).

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// [MQTT-4.7.3-1] topic names and filters are at least one character long.
    #[error("[MQTT-4.7.3-1] empty topic")]
    Empty,
    /// [MQTT-3.3.2-2] a topic name must not contain `+` or `#`.
    #[error("[MQTT-3.3.2-2] wildcard in topic name")]
    WildcardInName,
    /// [MQTT-4.7.1-2] `#` must be the last level and alone in it; [MQTT-4.7.1-3] `+` must occupy
    /// a whole level.
    #[error("[MQTT-4.7.1-2/3] misplaced wildcard in topic filter")]
    BadWildcard,
    /// `$share/{group}/{filter}` with an empty or wildcarded group or an empty filter
    /// ([MQTT-4.8.2-1], [MQTT-4.8.2-2]).
    #[error("[MQTT-4.8.2-1/2] invalid shared subscription")]
    BadShare,
}

/// Checks a PUBLISH topic name: non-empty, no wildcards.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter (a plain one, or the filter part of a shared subscription).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if !last => return Err(TopicError::BadWildcard),
            "#" | "+" => {}
            l if l.contains(['+', '#']) => return Err(TopicError::BadWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// A parsed shared subscription `$share/{group}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name.
    pub group: &'a str,
    /// The topic filter within the group.
    pub filter: &'a str,
}

/// Splits `$share/{group}/{filter}`; `Ok(None)` for a filter that is not a shared subscription.
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        if filter == "$share" {
            return Err(TopicError::BadShare);
        }
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(TopicError::BadShare);
    };
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(TopicError::BadShare);
    }
    validate_topic_filter(inner)?;
    Ok(Some(SharedFilter {
        group,
        filter: inner,
    }))
}

/// True when `topic` (a valid topic name) matches `filter` (a valid, non-shared filter).
/// Topics starting with `$` are not matched by filters starting with a wildcard ([MQTT-4.7.2-1]).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching_edge_cases() {
        assert!(matches("sport/tennis/#", "sport/tennis"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", ""));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/monitor", "$SYS/monitor"));
        assert!(matches("$SYS/#", "$SYS/monitor"));
        assert!(matches("a/+/c", "a//c"));
        assert!(!matches("a/b", "a/b/c"));
    }

    #[test]
    fn filter_validation() {
        assert!(validate_topic_filter("sport/tennis/#").is_ok());
        assert!(validate_topic_filter("+/tennis/#").is_ok());
        assert_eq!(
            validate_topic_filter("sport/tennis#"),
            Err(TopicError::BadWildcard)
        );
        assert_eq!(
            validate_topic_filter("sport/#/x"),
            Err(TopicError::BadWildcard)
        );
        assert_eq!(
            validate_topic_filter("sport+"),
            Err(TopicError::BadWildcard)
        );
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
    }

    #[test]
    fn shared_parsing() {
        assert_eq!(
            parse_shared("$share/g/a/#"),
            Ok(Some(SharedFilter {
                group: "g",
                filter: "a/#"
            }))
        );
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$share/g"), Err(TopicError::BadShare));
        assert_eq!(parse_shared("$share//a"), Err(TopicError::BadShare));
        assert_eq!(parse_shared("$share/g+/a"), Err(TopicError::BadShare));
    }
}
