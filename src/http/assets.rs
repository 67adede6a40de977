//! The embedded pages and static files (generated into the binary by build.rs).
//!
//! Static files are served with their content type, an ETag and a day of caching; the
//! terminal page with `no-store` and a strict Content-Security-Policy. Nothing from the
//! request is ever written into HTML: the page finds its session id in its own URL.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderMap, HeaderName, HeaderValue, IF_NONE_MATCH,
};
use hyper::{Response, StatusCode};

pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub etag: &'static str,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The page may load only our own scripts, styles, images and WebSocket; `frame-ancestors`
/// is appended by `page_csp` ('none' unless --allow-frame-ancestors names origins).
const PAGE_CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'";

/// The page's Content-Security-Policy for these allowed framing origins (checked origins
/// from the configuration: `scheme://host[:port]`).
pub fn page_csp(frame_ancestors: &[String]) -> HeaderValue {
    let ancestors = if frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        frame_ancestors.join(" ")
    };
    HeaderValue::from_str(&format!("{PAGE_CSP}; frame-ancestors {ancestors}"))
        .expect("origins were checked to be plain URLs")
}

pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// A static file, or 304 when the client's copy is current.
pub fn serve(asset: &Asset, request_headers: &HeaderMap) -> Response<Full<Bytes>> {
    let fresh = request_headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|tag| tag.trim() == asset.etag || tag.trim() == "*")
        });
    let mut res = if fresh {
        let mut res = Response::new(Full::default());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        res
    } else {
        let mut res = Response::new(Full::new(Bytes::from_static(asset.bytes)));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        res
    };
    let headers = res.headers_mut();
    headers.insert(ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// The terminal page (200) or the friendly not-found page (404).
pub fn page(found: bool, csp: &HeaderValue) -> Response<Full<Bytes>> {
    if found {
        html(&PAGE, StatusCode::OK, csp)
    } else {
        html(&NOT_FOUND_PAGE, StatusCode::NOT_FOUND, csp)
    }
}

/// The recording player page; the same for every recording name (it reads its own URL).
pub fn player(csp: &HeaderValue) -> Response<Full<Bytes>> {
    html(&PLAYER_PAGE, StatusCode::OK, csp)
}

/// A page under the page CSP, never cached.
fn html(asset: &Asset, status: StatusCode, csp: &HeaderValue) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(asset.bytes)));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        csp.clone(),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    // For browsers without CSP level 2; only when no framing is allowed at all.
    if csp.as_bytes().ends_with(b"frame-ancestors 'none'") {
        headers.insert(
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        );
    }
    res
}
