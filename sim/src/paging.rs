//! Paging of list methods in creation order, shared by the surfaces that list (the Google
//! AIP-151 `ListOperations`, the Redpanda control plane's lists, Compute's operations lists and
//! Cloud Control's `ListResourceRequests`).
//!
//! A page token is opaque to clients (URL-safe base64 without padding) and holds the list it
//! belongs to, a cursor — the store index of the first item of the next page — and when it was
//! issued. Because the cursor is a position in creation order rather than an offset into the
//! filtered list, items that are created, finish or stop matching a filter between two pages
//! are never returned twice and never make another item skipped. A token is refused (`invalid
//! page token`) when it does not decode or belongs to another list, and expires
//! [`TOKEN_TTL_MS`] of simulator time after it was issued (`invalid page token: the page token
//! has expired`).

use base64::Engine as _;
use serde_json::Value;

/// The Redpanda control plane: "Limit the number of operations returned per page, the page is
/// capped to 100 operations."
const REDPANDA_MAX_PAGE: usize = 100;
/// How long a page token may be used (simulator time).
pub const TOKEN_TTL_MS: u64 = 60_000;
/// The refusal of a token that does not decode or belongs to another list.
pub const INVALID_TOKEN: &str = "invalid page token";
/// The refusal of a token older than [`TOKEN_TTL_MS`].
pub const EXPIRED_TOKEN: &str = "invalid page token: the page token has expired";

/// Where a page of a list starts, and how long it is.
pub struct Paging {
    list: String,
    /// The most items a page holds.
    pub size: usize,
    /// The store index the page starts at.
    cursor: usize,
}

impl Paging {
    /// `page_size` and `page_token` as the Redpanda control plane reads them (grpc-gateway
    /// query parameters): `page_size` absent, zero or negative means 100, larger values are
    /// capped to 100, anything but an integer is refused as Go's `strconv.ParseInt` refuses
    /// it.
    pub fn read(params: &[(String, String)], list: &str, now_ms: u64) -> Result<Paging, String> {
        let value = |key: &str| {
            params
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let size = match value("page_size") {
            None => REDPANDA_MAX_PAGE,
            Some(raw) => match raw.parse::<i32>() {
                Ok(n) if n > 0 => usize::try_from(n)
                    .unwrap_or(REDPANDA_MAX_PAGE)
                    .min(REDPANDA_MAX_PAGE),
                Ok(_) => REDPANDA_MAX_PAGE,
                Err(_) => {
                    return Err(format!(
                        "type mismatch, parameter: page_size, error: strconv.ParseInt: parsing {raw:?}: invalid syntax"
                    ));
                }
            },
        };
        Paging::resume(list, size, value("page_token"), now_ms)
    }

    /// Pages of `size` items of `list`, from the start (`token` absent or empty) or from where
    /// `token` says; the error is the refusal's message ([`INVALID_TOKEN`],
    /// [`EXPIRED_TOKEN`]).
    pub fn resume(
        list: &str,
        size: usize,
        token: Option<&str>,
        now_ms: u64,
    ) -> Result<Paging, String> {
        let cursor = match token.filter(|t| !t.is_empty()) {
            None => 0,
            Some(token) => {
                let (token_list, cursor, issued) =
                    decode_token(token).ok_or_else(|| INVALID_TOKEN.to_owned())?;
                if token_list != list {
                    return Err(INVALID_TOKEN.to_owned());
                }
                if now_ms.saturating_sub(issued) > TOKEN_TTL_MS {
                    return Err(EXPIRED_TOKEN.to_owned());
                }
                cursor
            }
        };
        Ok(Paging {
            list: list.to_owned(),
            size,
            cursor,
        })
    }

    /// The store index the page starts at: items before it need not be looked at.
    pub fn start(&self) -> usize {
        self.cursor
    }

    /// The page of `items` (store index, item) from the cursor on, and the next page's token
    /// (`""` on the last page).
    pub fn page(
        &self,
        items: impl Iterator<Item = (usize, Value)>,
        now_ms: u64,
    ) -> (Vec<Value>, String) {
        let mut page = Vec::new();
        let mut next = String::new();
        for (index, item) in items.filter(|(i, _)| *i >= self.cursor) {
            if page.len() == self.size {
                next = encode_token(&self.list, index, now_ms);
                break;
            }
            page.push(item);
        }
        (page, next)
    }
}

/// The token of the page of `list` that starts at store index `cursor`, issued at `now_ms`.
pub fn encode_token(list: &str, cursor: usize, now_ms: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{list}:{cursor}:{now_ms}"))
}

/// The list, cursor and issue time of a token; `None` if it is not one (a list name holds no
/// `:`).
pub fn decode_token(token: &str) -> Option<(String, usize, u64)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split(':');
    let list = parts.next()?.to_owned();
    let cursor = parts.next()?.parse().ok()?;
    let issued = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((list, cursor, issued))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_cursor_neither_repeats_nor_skips() {
        let items = |indices: &[usize]| {
            indices
                .iter()
                .map(|&i| (i, json!(i)))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let first = Paging::resume("l", 2, None, 0).unwrap();
        let (page, next) = first.page(items(&[0, 2, 3, 5]), 0);
        assert_eq!(page, [json!(0), json!(2)]);
        // Item 3 stopped matching and item 6 appeared in between.
        let second = Paging::resume("l", 2, Some(&next), 1).unwrap();
        assert_eq!(second.start(), 3);
        let (page, next) = second.page(items(&[0, 2, 5, 6]), 1);
        assert_eq!((page, next), (vec![json!(5), json!(6)], String::new()));
    }

    #[test]
    fn tokens_are_checked() {
        let token = encode_token("l", 4, 1_000);
        assert_eq!(decode_token(&token), Some(("l".to_owned(), 4, 1_000)));
        assert_eq!(
            Paging::resume("other", 1, Some(&token), 1_000).err(),
            Some(INVALID_TOKEN.to_owned())
        );
        assert_eq!(
            Paging::resume("l", 1, Some("abc"), 1_000).err(),
            Some(INVALID_TOKEN.to_owned())
        );
        assert_eq!(
            Paging::resume("l", 1, Some(&token), 1_000 + TOKEN_TTL_MS + 1).err(),
            Some(EXPIRED_TOKEN.to_owned())
        );
        let fresh = Paging::resume("l", 1, Some(&token), 1_000 + TOKEN_TTL_MS);
        assert_eq!(fresh.map(|p| p.start()), Ok(4));
        assert_eq!(
            Paging::resume("l", 1, Some(""), 0).map(|p| p.start()),
            Ok(0)
        );
    }
}
