//! `multipart/batching`: many GETs in one round trip (BatchingRequests.md). Builds the request
//! body and splits the response into its parts, which come back in request order.

/// The most requests a user may have outstanding; a batch beyond it is rejected whole (429).
pub const MAX_OUTSTANDING: usize = 100;

/// One embedded response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A batch response that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// The response is not `multipart/batching` with a boundary.
    #[error("response is not multipart/batching with a boundary: {0:?}")]
    ContentType(String),
    /// A part does not hold an HTTP response.
    #[error("part {index} is not an HTTP response")]
    Part { index: usize },
}

/// The `Content-Type` of a batch request with `boundary`.
pub fn content_type(boundary: &str) -> String {
    format!("multipart/batching;boundary={boundary}")
}

/// A batch of GETs for `paths` (absolute paths with query) on `host`.
pub fn request_body(boundary: &str, host: &str, paths: &[String]) -> String {
    let mut out = String::new();
    for path in paths {
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/http; msgtype=request\r\n\r\nGET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n"
        ));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

/// The `boundary` parameter of a `multipart/batching` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';').map(str::trim);
    if !params.next()?.eq_ignore_ascii_case("multipart/batching") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Splits a batch response into its embedded responses, in order.
pub fn parse_response(content_type: &str, body: &[u8]) -> Result<Vec<Part>, BatchError> {
    let boundary =
        boundary(content_type).ok_or_else(|| BatchError::ContentType(content_type.to_owned()))?;
    let text = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    for (index, chunk) in text.split(&delimiter).skip(1).enumerate() {
        if chunk.starts_with("--") {
            break;
        }
        // Part headers, a blank line, then the embedded response.
        let (_, embedded) = split_blank(chunk).ok_or(BatchError::Part { index })?;
        let (head, body) = split_blank(embedded).ok_or(BatchError::Part { index })?;
        let status = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or(BatchError::Part { index })?;
        let body = body
            .strip_suffix("\r\n")
            .or_else(|| body.strip_suffix('\n'))
            .unwrap_or(body);
        parts.push(Part {
            status,
            body: body.as_bytes().to_vec(),
        });
    }
    Ok(parts)
}

/// Splits at the first blank line (CRLF or LF), skipping a leading line break.
fn split_blank(s: &str) -> Option<(&str, &str)> {
    let s = s
        .strip_prefix("\r\n")
        .or_else(|| s.strip_prefix('\n'))
        .unwrap_or(s);
    if let Some(i) = s.find("\r\n\r\n") {
        return Some((&s[..i], &s[i + 4..]));
    }
    s.find("\n\n").map(|i| (&s[..i], &s[i + 2..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_matches_the_documented_sample() {
        let body = request_body(
            "77f2569d",
            "lyncweb.contoso.com",
            &["/ucwa/oauth/v1/applications/103/people/contacts".to_owned()],
        );
        assert_eq!(
            body,
            "--77f2569d\r\nContent-Type: application/http; msgtype=request\r\n\r\n\
             GET /ucwa/oauth/v1/applications/103/people/contacts HTTP/1.1\r\nHost: lyncweb.contoso.com\r\n\
             Accept: application/json\r\n\r\n--77f2569d--\r\n"
        );
        assert_eq!(
            content_type("77f2569d"),
            "multipart/batching;boundary=77f2569d"
        );
    }

    #[test]
    fn response_parts_come_back_in_order() {
        let body = "--b1\r\nContent-Type: application/http; msgtype=response\r\n\r\nHTTP/1.1 200 OK\r\n\
                    Content-Type: application/json; charset=utf-8\r\n\r\n{\"availability\":\"Online\"}\r\n\
                    --b1\r\nContent-Type: application/http; msgtype=response\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n\
                    {\"code\":\"NotFound\"}\r\n--b1--\r\n";
        let parts = parse_response("multipart/batching; boundary=\"b1\"", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            Part {
                status: 200,
                body: br#"{"availability":"Online"}"#.to_vec()
            }
        );
        assert_eq!(parts[1].status, 404);
        assert!(matches!(
            parse_response("application/json", b"{}"),
            Err(BatchError::ContentType(_))
        ));
        let broken = parse_response(
            "multipart/batching;boundary=b1",
            b"--b1\r\nno blank line--b1--",
        );
        assert_eq!(broken, Err(BatchError::Part { index: 0 }));
    }
}
