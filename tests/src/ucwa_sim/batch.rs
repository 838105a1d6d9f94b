//! `POST <application.batch>`: `multipart/batching` requests answered part by part in request
//! order. Only presence reads are served inside a batch; more than 100 parts reject the whole
//! batch with 429, as the server's outstanding-request limit does.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    application::{app_base, check},
    auth::ucwa_error,
    people::presence_doc,
    state::Sim,
};

/// Outstanding requests a user may have.
const LIMIT: usize = 100;

/// The boundary of a `multipart/batching` content type.
fn boundary(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mut params = ct.split(';').map(str::trim);
    if !params.next()?.eq_ignore_ascii_case("multipart/batching") {
        return None;
    }
    params.find_map(|p| {
        p.split_once('=')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
    })
}

/// The request lines (`GET /path HTTP/1.1`) of each part.
fn request_lines(body: &str, boundary: &str) -> Vec<String> {
    let delimiter = format!("--{boundary}");
    body.split(&delimiter)
        .skip(1)
        .take_while(|chunk| !chunk.starts_with("--"))
        .map(|chunk| {
            let chunk = chunk.replace("\r\n", "\n");
            let embedded = chunk
                .trim_start_matches('\n')
                .split_once("\n\n")
                .map(|(_, e)| e.to_owned())
                .unwrap_or_default();
            embedded.lines().next().unwrap_or("").trim().to_owned()
        })
        .collect()
}

/// `POST <batch>`.
pub async fn batch(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = check(&sim, &headers, &id) {
        return response;
    }
    let Some(boundary) = boundary(&headers) else {
        return ucwa_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            None,
            "Expected multipart/batching.",
        );
    };
    let lines = request_lines(&String::from_utf8_lossy(&body), &boundary);
    if lines.len() > LIMIT {
        return ucwa_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            None,
            "Too many outstanding requests.",
        );
    }
    sim.lock().batches += 1;
    let people = format!("{}/people/", app_base(&id));
    let out_boundary = format!("{:016x}", rand::random::<u64>());
    let mut out = String::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = path.split('?').next().unwrap_or("");
        let user = path
            .strip_prefix(&people)
            .and_then(|rest| rest.strip_suffix("/presence"));
        let (status, doc) = match (method, user) {
            ("GET", Some(user)) => presence_doc(
                &sim,
                &id,
                &percent_encoding::percent_decode_str(user).decode_utf8_lossy(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                json!({ "code": "NotFound", "message": "Not served inside a batch by the simulator." }),
            ),
        };
        out.push_str(&format!(
            "--{out_boundary}\r\nContent-Type: application/http; msgtype=response\r\n\r\nHTTP/1.1 {} {}\r\n\
             Content-Type: application/json; charset=utf-8\r\n\r\n{doc}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ));
    }
    out.push_str(&format!("--{out_boundary}--\r\n"));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            format!("multipart/batching; boundary={out_boundary}"),
        )],
        out,
    )
        .into_response()
}
