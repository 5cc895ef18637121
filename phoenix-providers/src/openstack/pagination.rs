//! Marker pagination, as Nova (`/servers/detail`, `/images/detail`),
//! Glance (`/v2/images`) and Octavia (`/v2/lbaas/pools/{id}/members`) do
//! it: each request after the first names the id of the last item seen,
//! and the answer says whether more follow.
//!
//! One loop for every list, so that every list gets the same protection
//! against a cloud that misbehaves: a cloud that ignores the marker (and
//! answers the same page again, or cycles through pages) is caught the
//! first time a marker comes round again, after one wasted request rather
//! than after filling memory with copies; a list that never ends stops at
//! [`MAX_PAGES`].
//!
//! ```
//! use phoenix_core::ports::PortError;
//! use phoenix_providers::openstack::pagination::{by_marker, Page};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // A two-page list: the first page says more follow, the second does not.
//! let listing = by_marker("listing numbers", |marker: Option<String>| async move {
//!     let (items, more) = match marker.as_deref() {
//!         None => (vec![1, 2], true),
//!         _ => (vec![3], false),
//!     };
//!     let last_id = items.last().map(|i: &u32| i.to_string());
//!     Ok::<_, PortError>(Page { items, last_id, more })
//! })
//! .await
//! .unwrap();
//! assert_eq!(listing.items, [1, 2, 3]);
//! assert_eq!(listing.requests, 2);
//! # });
//! ```

use std::collections::HashSet;
use std::future::Future;

use phoenix_core::ports::{ErrorKind, PortError};
use serde_json::Value;

/// Pages one listing may take: far beyond any project (100,000 pages of
/// the smallest sensible page), yet finite.
pub const MAX_PAGES: u64 = 100_000;

/// One answer of a paginated list.
#[derive(Debug)]
pub struct Page<T> {
    /// The page's items, converted.
    pub items: Vec<T>,
    /// The id of the page's last item: the marker of the next request.
    pub last_id: Option<String>,
    /// Whether the cloud says (or implies) that more follow.
    pub more: bool,
}

/// Every item of a list, and the requests it took.
#[derive(Debug)]
pub struct Listing<T> {
    /// The items of every page, in order.
    pub items: Vec<T>,
    /// The requests made.
    pub requests: u64,
}

/// Whether `body[links]` (Nova's `servers_links`, `images_links`;
/// Octavia's `members_links`) has a link with `rel` `next`.
pub fn has_next_link(body: &Value, links: &str) -> bool {
    body.get(links)
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|link| link["rel"] == "next"))
}

/// The `id` of the last of `items`: the marker of the next request.
pub fn last_id(items: &[Value]) -> Option<String> {
    items
        .last()
        .and_then(|item| item.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Fetches pages with `fetch(marker)` (`None` for the first) until one
/// says no more follow or is empty.
///
/// # Errors
///
/// What `fetch` returns; [`ErrorKind::BadResponse`] when the cloud hands
/// back a marker it gave before (it ignores the marker) or the list runs
/// past [`MAX_PAGES`].
pub async fn by_marker<T, F, Fut>(operation: &str, mut fetch: F) -> Result<Listing<T>, PortError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, PortError>>,
{
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    let mut marker: Option<String> = None;
    for requests in 1..=MAX_PAGES {
        let page = fetch(marker.take()).await?;
        items.extend(page.items);
        let next = match page.last_id {
            Some(last) if page.more => last,
            _ => return Ok(Listing { items, requests }),
        };
        if !seen.insert(next.clone()) {
            return Err(PortError::new(
                operation,
                ErrorKind::BadResponse(format!(
                    "page {requests} ends with `{next}` again, as an earlier page did: \
                     the cloud ignores the pagination marker"
                )),
            ));
        }
        marker = Some(next);
    }
    Err(PortError::new(
        operation,
        ErrorKind::BadResponse(format!("the list runs past {MAX_PAGES} pages")),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::cell::RefCell;

    use super::*;

    fn page(ids: &[u32], more: bool) -> Page<u32> {
        Page {
            items: ids.to_vec(),
            last_id: ids.last().map(u32::to_string),
            more,
        }
    }

    #[tokio::test]
    async fn follows_markers_until_the_cloud_says_no_more() {
        let asked = RefCell::new(Vec::new());
        let listing = by_marker("list", |marker: Option<String>| {
            asked.borrow_mut().push(marker.clone());
            let answer = match marker.as_deref() {
                None => page(&[1, 2], true),
                Some("2") => page(&[3, 4], true),
                Some("4") => page(&[5], false),
                Some(other) => panic!("unexpected marker {other}"),
            };
            async move { Ok(answer) }
        })
        .await
        .unwrap();
        assert_eq!(listing.items, [1, 2, 3, 4, 5]);
        assert_eq!(listing.requests, 3);
        assert_eq!(
            asked.into_inner(),
            [None, Some("2".to_owned()), Some("4".to_owned())]
        );
    }

    #[tokio::test]
    async fn an_empty_page_ends_the_list_whatever_it_says() {
        let listing = by_marker("list", |marker: Option<String>| {
            let answer = if marker.is_none() {
                page(&[1], true)
            } else {
                page(&[], true)
            };
            async move { Ok(answer) }
        })
        .await
        .unwrap();
        assert_eq!(listing.items, [1]);
        assert_eq!(listing.requests, 2);
    }

    #[tokio::test]
    async fn a_cloud_that_ignores_the_marker_is_caught_on_the_second_page() {
        let requests = RefCell::new(0);
        let err = by_marker("nova: listing servers", |_marker: Option<String>| {
            *requests.borrow_mut() += 1;
            async move { Ok(page(&[1, 2, 3], true)) }
        })
        .await
        .unwrap_err();
        assert_eq!(*requests.borrow(), 2);
        assert!(matches!(err.kind, ErrorKind::BadResponse(_)), "{err}");
        assert!(
            err.to_string().contains("ignores the pagination marker"),
            "{err}"
        );
        assert!(err.to_string().contains("nova: listing servers"), "{err}");
    }

    #[tokio::test]
    async fn a_cycle_through_several_pages_is_caught_too() {
        let err = by_marker("list", |marker: Option<String>| {
            let answer = match marker.as_deref() {
                None | Some("4") => page(&[1, 2], true),
                _ => page(&[3, 4], true),
            };
            async move { Ok(answer) }
        })
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("page 3 ends with `2` again"),
            "{err}"
        );
    }

    #[test]
    fn next_links_and_last_ids_are_read_from_json() {
        let body = serde_json::json!({
            "members": [{"id": "a"}, {"id": "b"}],
            "members_links": [{"rel": "previous", "href": "x"}, {"rel": "next", "href": "y"}],
            "images_links": [{"rel": "previous", "href": "x"}],
        });
        assert!(has_next_link(&body, "members_links"));
        assert!(!has_next_link(&body, "images_links"));
        assert!(
            !has_next_link(&body, "servers_links"),
            "absent links: no more"
        );
        let members = body["members"].as_array().unwrap();
        assert_eq!(last_id(members).as_deref(), Some("b"));
        assert_eq!(last_id(&[]), None);
        assert_eq!(
            last_id(&[serde_json::json!({"id": 7})]),
            None,
            "ids are strings"
        );
    }

    #[tokio::test]
    async fn errors_of_a_page_are_passed_on() {
        let err = by_marker::<u32, _, _>("list", |_marker: Option<String>| async {
            Err(PortError::new(
                "list",
                ErrorKind::Temporary("HTTP 503".into()),
            ))
        })
        .await
        .unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Temporary(_)));
    }
}
