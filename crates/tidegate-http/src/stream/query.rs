//! The parameters of `GET /v1/subscribe` and `GET /v1/poll`, read and checked before a stream
//! opens, so a bad request is a 400 JSON answer rather than a stream that fails later.
//!
//! Place in the data flow: `request query (+ Last-Event-ID) -> StreamParams -> checked filters
//! and position -> Hub::open`. The query is read by hand because `filter` repeats
//! (`?filter=a/%23&filter=b/+`), which `serde_urlencoded` cannot put in a struct; unknown
//! parameters are ignored (cache busters that polyfills append).

use super::position::Position;
use crate::error::ApiError;
use std::time::Duration;
use tidegate_protocol::topic::{parse_shared, validate_topic_filter};

/// The longest topic filter MQTT can carry (a two-byte length prefix).
const MAX_FILTER_BYTES: usize = 65_535;

/// The raw parameters of a stream request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamParams {
    /// Every `filter`, in order.
    pub(crate) filters: Vec<String>,
    /// `last_event_id` (SSE clients that cannot set the header).
    pub(crate) last_event_id: Option<String>,
    /// `cursor` (long-poll).
    pub(crate) cursor: Option<String>,
    /// `timeout` (long-poll), seconds.
    pub(crate) timeout: Option<String>,
}

impl StreamParams {
    /// Reads the query string (without `?`). A repeated single-valued parameter is refused: which
    /// one the client meant cannot be told.
    pub(crate) fn parse(query: Option<&str>) -> Result<StreamParams, ApiError> {
        let mut params = StreamParams::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match key.as_ref() {
                "filter" => {
                    params.filters.push(value.into_owned());
                    continue;
                }
                "last_event_id" => &mut params.last_event_id,
                "cursor" => &mut params.cursor,
                "timeout" => &mut params.timeout,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(ApiError::bad_request(format!(
                    "the query parameter `{key}` is given more than once"
                )));
            }
        }
        Ok(params)
    }
}

/// The filters of a request, checked: at least one, at most `max` distinct ones, each a valid
/// MQTT topic filter and not a shared subscription. Repeats are dropped (first one kept).
pub(crate) fn check_filters(filters: Vec<String>, max: usize) -> Result<Vec<String>, ApiError> {
    if filters.is_empty() {
        return Err(ApiError::bad_request(
            "at least one `filter` query parameter is required",
        ));
    }
    let mut distinct: Vec<String> = Vec::with_capacity(filters.len().min(max));
    for filter in filters {
        if distinct.contains(&filter) {
            continue;
        }
        if distinct.len() == max {
            return Err(ApiError::bad_request(format!(
                "at most {max} distinct filters per request (http.max_filters)"
            )));
        }
        check_filter(&filter)?;
        distinct.push(filter);
    }
    Ok(distinct)
}

fn check_filter(filter: &str) -> Result<(), ApiError> {
    if filter.len() > MAX_FILTER_BYTES {
        return Err(ApiError::invalid_topic(format!(
            "a topic filter is at most {MAX_FILTER_BYTES} bytes"
        )));
    }
    if filter.contains('\0') {
        return Err(ApiError::invalid_topic(
            "[MQTT-1.5.4-2] a topic filter must not contain U+0000",
        ));
    }
    validate_topic_filter(filter)
        .map_err(|e| ApiError::invalid_topic(format!("invalid filter {filter:?}: {e}")))?;
    match parse_shared(filter) {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(ApiError::invalid_topic(format!(
            "shared subscriptions are not available over HTTP ({filter:?}): a stream has one \
             reader; subscribe to the plain filter"
        ))),
        Err(e) => Err(ApiError::invalid_topic(format!(
            "invalid filter {filter:?}: {e}"
        ))),
    }
}

/// A position a client handed back (`Last-Event-ID`, `last_event_id` or `cursor`, named by
/// `what` in the error).
pub(crate) fn parse_position(value: &str, what: &str) -> Result<Position, ApiError> {
    Position::parse(value).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

/// The long-poll wait: `timeout` seconds (default `default`), at most `max`.
pub(crate) fn poll_timeout(
    timeout: Option<&str>,
    default: u64,
    max: u64,
) -> Result<Duration, ApiError> {
    let secs = match timeout {
        None => default,
        Some(t) => t
            .trim()
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("timeout: a whole number of seconds is expected"))?,
    };
    Ok(Duration::from_secs(secs.min(max)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn repeated_filters_and_single_parameters_are_read() {
        let p = StreamParams::parse(Some(
            "filter=a%2F%23&filter=b/%2B&cursor=1-2&timeout=5&_=123&last_event_id=3-4",
        ))
        .unwrap();
        assert_eq!(p.filters, owned(&["a/#", "b/+"]));
        assert_eq!(p.cursor.as_deref(), Some("1-2"));
        assert_eq!(p.timeout.as_deref(), Some("5"));
        assert_eq!(p.last_event_id.as_deref(), Some("3-4"));
        assert_eq!(StreamParams::parse(None).unwrap(), StreamParams::default());
        let twice = StreamParams::parse(Some("filter=a&cursor=1-2&cursor=1-3")).unwrap_err();
        assert_eq!(twice.code, "bad_request");
    }

    #[test]
    fn filters_are_checked_and_deduplicated() {
        assert_eq!(
            check_filters(owned(&["a/#", "b", "a/#"]), 2).unwrap(),
            owned(&["a/#", "b"])
        );
        assert_eq!(check_filters(vec![], 2).unwrap_err().code, "bad_request");
        assert_eq!(
            check_filters(owned(&["a", "b", "c"]), 2).unwrap_err().code,
            "bad_request"
        );
        for bad in [
            "",
            "a/#/b",
            "a+",
            "$share/g/a",
            "$share/g",
            "$share",
            "a\0b",
        ] {
            let e = check_filters(owned(&[bad]), 4).unwrap_err();
            assert_eq!(e.code, "invalid_topic", "{bad:?}");
        }
        let long = "a".repeat(MAX_FILTER_BYTES + 1);
        assert_eq!(
            check_filters(vec![long], 1).unwrap_err().code,
            "invalid_topic"
        );
    }

    #[test]
    fn the_poll_timeout_is_capped() {
        assert_eq!(poll_timeout(None, 30, 60).unwrap(), Duration::from_secs(30));
        assert_eq!(
            poll_timeout(Some("90"), 30, 60).unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(poll_timeout(Some("0"), 30, 60).unwrap(), Duration::ZERO);
        assert!(poll_timeout(Some("-1"), 30, 60).is_err());
        assert!(poll_timeout(Some("1.5"), 30, 60).is_err());
    }

    #[test]
    fn positions_from_clients_are_parsed() {
        assert!(parse_position("ab-3", "cursor").is_ok());
        let e = parse_position("nope", "cursor").unwrap_err();
        assert_eq!(e.code, "bad_request");
        assert!(e.message.starts_with("cursor: "));
    }
}
