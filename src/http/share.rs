//! Read-only share links: `POST /sessions/<id>/share` makes one, `DELETE
//! /sessions/<id>/share/<view id>` revokes it. Allowed to the session's own page (its
//! current resume token) and to API token holders. A link lives as long as its session.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use serde_json::json;
use uuid::Uuid;

use super::error::ApiError;
use super::{State, auth, uncached};
use crate::store::SessionId;
use crate::ws::ShareError;

/// `<id>/share[/<view id>]` (the path after `/sessions/`), split into its ids; `None` for
/// any other shape.
pub fn parse_path(rest: &str) -> Option<(Uuid, Option<Uuid>)> {
    let (id, rest) = rest.split_once('/')?;
    let id = Uuid::parse_str(id).ok()?;
    match rest {
        "share" => Some((id, None)),
        _ => {
            let link = rest.strip_prefix("share/")?;
            Some((id, Some(Uuid::parse_str(link).ok()?)))
        }
    }
}

/// The session's own resume token, or any API token.
fn authorize(
    headers: &HeaderMap,
    state: &State,
    client: IpAddr,
    id: &Uuid,
) -> Result<(), ApiError> {
    let bearer = auth::bearer(headers).ok_or_else(ApiError::unauthorized)?;
    if state.ws.registry.token_matches(id, bearer) {
        return Ok(());
    }
    state.authenticate(headers, client).map(|_| ())
}

pub fn create(
    headers: &HeaderMap,
    state: &State,
    client: IpAddr,
    id: &Uuid,
    base: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    authorize(headers, state, client, id)?;
    let max = state.ws.settings.max_viewers;
    let link = state.ws.registry.share(id, max).map_err(|e| match e {
        ShareError::UnknownSession => ApiError::unknown_session(),
        ShareError::TooManyLinks { max } => ApiError::too_many_share_links(max),
    })?;
    tracing::info!(
        session = %SessionId::from(id),
        view = &link.simple().to_string()[..8],
        "share link created"
    );
    let body = json!({
        "view_id": link.to_string(),
        "view_url": format!("{base}/view/{link}"),
        "max_viewers": max,
    });
    Ok(uncached(
        StatusCode::CREATED,
        "application/json",
        body.to_string().into(),
    ))
}

pub fn revoke(
    headers: &HeaderMap,
    state: &State,
    client: IpAddr,
    id: &Uuid,
    link: &Uuid,
) -> Result<Response<Full<Bytes>>, ApiError> {
    authorize(headers, state, client, id)?;
    if !state.ws.registry.revoke(id, link) {
        return Err(ApiError::not_found());
    }
    tracing::info!(
        session = %SessionId::from(id),
        view = &link.simple().to_string()[..8],
        "share link revoked"
    );
    Ok(uncached(
        StatusCode::NO_CONTENT,
        "application/json",
        Bytes::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let id = Uuid::new_v4();
        let link = Uuid::new_v4();
        assert_eq!(parse_path(&format!("{id}/share")), Some((id, None)));
        assert_eq!(
            parse_path(&format!("{id}/share/{link}")),
            Some((id, Some(link)))
        );
        for bad in [
            String::new(),
            id.to_string(),
            format!("{id}/share/"),
            format!("{id}/share/x"),
            format!("{id}/sharex"),
            "x/share".to_owned(),
            format!("{id}/share/{link}/more"),
            format!("/{id}/share"),
        ] {
            assert_eq!(parse_path(&bad), None, "{bad}");
        }
    }
}
