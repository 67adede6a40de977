//! Read-only share links: `POST /sessions/<id>/share` makes one, `DELETE
//! /sessions/<id>/share/<view id>` revokes it. Allowed to the session's own page (its
//! current resume token), to the API token that created it and to admin tokens. A link
//! lives as long as its session.

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

/// The session's own resume token, or the API token that created it (or an admin's).
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
    let caller = state.authenticate(headers, client)?;
    let owned = state
        .ledger
        .get(&SessionId::from(id))
        .is_some_and(|s| caller.owns(&s.status.token));
    // Another token's session does not exist, as far as this caller can tell.
    owned.then_some(()).ok_or_else(ApiError::unknown_session)
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
