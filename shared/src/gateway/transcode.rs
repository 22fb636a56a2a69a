//! JSON ↔ gRPC: the request message built from a JSON body, path variables
//! and query parameters; the gRPC call it becomes; the response (or the
//! status) as canonical proto3 JSON; server streams as server-sent events.
//!
//! The JSON mapping is prost-reflect's (canonical proto3 JSON: lowerCamelCase
//! names, int64 as strings, enum names, RFC 3339 timestamps, well-known
//! types); unknown fields are refused, and where parsing failed is named by
//! `serde_path_to_error`.

use std::{fmt::Write as _, time::Duration};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor,
};
use serde_json::{Map, Value as Json};
use tonic::{Code, Status, body::Body};

use super::routes::{BodyRule, field_path};
use crate::errors::{self, FieldViolation};

/// `ErrorInfo.domain` of the errors the gateway itself answers (malformed
/// JSON, unknown routes).
pub const DOMAIN: &str = "backroom.gateway";

/// What a JSON request resolved to.
#[derive(Debug, Clone)]
pub struct Target {
    pub method: MethodDescriptor,
    pub body: BodyRule,
    pub bound: Vec<(String, String)>,
    /// Query parameters map to fields (REST routes; not Connect).
    pub query: bool,
    pub response_body: Option<String>,
}

/// The request message of `target`, encoded, from the JSON `body`, the path
/// variables and the `query` string.
pub fn request_message(
    target: &Target,
    body: &[u8],
    query: Option<&str>,
) -> Result<Vec<u8>, Status> {
    let input = target.method.input();
    let mut json = match &target.body {
        BodyRule::None => Json::Object(Map::new()),
        BodyRule::Whole if body.iter().all(u8::is_ascii_whitespace) => Json::Object(Map::new()),
        BodyRule::Whole => {
            let value = parse_body(body)?;
            if !value.is_object() {
                return Err(bad("body", "must be a JSON object"));
            }
            value
        }
        BodyRule::Field(field) => {
            let mut object = Map::new();
            if !body.iter().all(u8::is_ascii_whitespace) {
                let name = input
                    .get_field_by_name(field)
                    .map_or_else(|| field.clone(), |f| f.json_name().to_owned());
                object.insert(name, parse_body(body)?);
            }
            Json::Object(object)
        }
    };
    for (path, value) in &target.bound {
        set(&input, &mut json, path, Json::String(value.clone()), false)?;
    }
    if target.query
        && let Some(query) = query
    {
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let fields = field_path(&input, &name)
                .ok_or_else(|| bad(&name, "is not a field of the request (query parameter)"))?;
            let last = fields.last().expect("a path has a field");
            // By field, whatever the spelling: a query parameter may not
            // set (or reach inside) what the path binds or the body holds.
            let numbers: Vec<u32> = fields.iter().map(|f| f.number()).collect();
            let covered = |path: &str| {
                field_path(&input, path).is_some_and(|taken| {
                    let taken: Vec<u32> = taken.iter().map(|f| f.number()).collect();
                    numbers.starts_with(&taken) || taken.starts_with(&numbers)
                })
            };
            if target.bound.iter().any(|(bound, _)| covered(bound)) {
                return Err(bad(
                    &name,
                    "is bound by the path; it cannot be a query parameter too",
                ));
            }
            if let BodyRule::Field(field) = &target.body
                && covered(field)
            {
                return Err(bad(
                    &name,
                    "is in the request body; it cannot be a query parameter too",
                ));
            }
            let value = query_value(last, &value).map_err(|why| bad(&name, &why))?;
            set(&input, &mut json, &name, value, last.is_list())?;
        }
    }
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let parsed = DynamicMessage::deserialize_with_options(
        input,
        serde_path_to_error::Deserializer::new(json, &mut track),
        &options,
    );
    let message = parsed.map_err(|err| {
        let path = track.path().to_string();
        let field = if path == "." || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        bad(&field, &err.to_string())
    })?;
    Ok(message.encode_to_vec())
}

fn parse_body(body: &[u8]) -> Result<Json, Status> {
    serde_json::from_slice(body).map_err(|err| bad("body", &format!("is not valid JSON: {err}")))
}

/// INVALID_ARGUMENT naming `field`.
pub fn bad(field: &str, why: &str) -> Status {
    errors::invalid_argument(DOMAIN, &[FieldViolation::new(field, why)])
}

/// Sets the field at `path` (dotted, proto or JSON names) of the JSON
/// object `json` to `value` (appended when `append`), creating objects on
/// the way.
fn set(
    message: &MessageDescriptor,
    json: &mut Json,
    path: &str,
    value: Json,
    append: bool,
) -> Result<(), Status> {
    let fields =
        field_path(message, path).ok_or_else(|| bad(path, "is not a field of the request"))?;
    let mut at = json;
    for (i, field) in fields.iter().enumerate() {
        let object = at
            .as_object_mut()
            .ok_or_else(|| bad(path, "is set both as a message and as a value"))?;
        // The body may carry the field under its proto name: one spelling.
        if object.contains_key(field.name()) && field.name() != field.json_name() {
            let moved = object.remove(field.name()).unwrap_or_default();
            object.insert(field.json_name().to_owned(), moved);
        }
        let slot = object
            .entry(field.json_name().to_owned())
            .or_insert(Json::Null);
        if i + 1 == fields.len() {
            if append {
                match slot {
                    Json::Array(items) => items.push(value),
                    _ => *slot = Json::Array(vec![value]),
                }
            } else {
                // The path's value wins over the body's (AIP-127).
                *slot = value;
            }
            return Ok(());
        }
        if slot.is_null() {
            *slot = Json::Object(Map::new());
        }
        at = slot;
    }
    Ok(())
}

/// A query parameter's text as the JSON the field's type takes.
fn query_value(field: &prost_reflect::FieldDescriptor, text: &str) -> Result<Json, String> {
    Ok(match field.kind() {
        Kind::Bool => match text {
            "true" => Json::Bool(true),
            "false" => Json::Bool(false),
            _ => return Err(format!("must be true or false, not {text:?}")),
        },
        Kind::Double
        | Kind::Float
        | Kind::Int32
        | Kind::Sint32
        | Kind::Sfixed32
        | Kind::Uint32
        | Kind::Fixed32 => match serde_json::from_str::<serde_json::Number>(text) {
            Ok(number) => Json::Number(number),
            Err(_) => Json::String(text.to_owned()),
        },
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value" => Json::String(text.to_owned()),
            _ => return Err("is a message: send it in a JSON body".to_owned()),
        },
        _ => Json::String(text.to_owned()),
    })
}

/// A gRPC length-prefixed message (uncompressed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(message.len() + 5);
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// Takes the complete gRPC messages off the front of `buffer`.
fn take_messages(buffer: &mut BytesMut) -> Result<Vec<Bytes>, Status> {
    let mut messages = Vec::new();
    while buffer.len() >= 5 {
        let compressed = buffer[0] & 1 == 1;
        let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
        if buffer.len() < 5 + length {
            break;
        }
        if compressed {
            return Err(Status::internal(
                "the service answered with a compressed message",
            ));
        }
        buffer.advance(5);
        messages.push(buffer.split_to(length).freeze());
    }
    Ok(messages)
}

/// `bytes` (a `target.method` response) as JSON, or only its
/// `response_body` field.
fn response_json(target: &Target, bytes: &[u8]) -> Result<Vec<u8>, Status> {
    let message = DynamicMessage::decode(target.method.output(), bytes)
        .map_err(|err| Status::internal(format!("undecodable response: {err}")))?;
    let encoded = match &target.response_body {
        Some(field) => {
            let value = message
                .get_field_by_name(field)
                .ok_or_else(|| Status::internal(format!("no response field {field}")))?;
            let field = target
                .method
                .output()
                .get_field_by_name(field)
                .expect("checked");
            // One field's JSON: that of a message holding only it.
            let mut only = DynamicMessage::new(target.method.output());
            only.set_field(&field, value.into_owned());
            let whole =
                serde_json::to_value(&only).map_err(|err| Status::internal(err.to_string()))?;
            serde_json::to_vec(&whole[field.json_name()])
        }
        None => serde_json::to_vec(&message),
    };
    encoded.map_err(|err| Status::internal(format!("unencodable response: {err}")))
}

/// The HTTP status of a gRPC code (google.rpc.Code's documented mapping,
/// AIP-193).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The descriptors of `google.rpc` (Status and its details), for the JSON
/// of errors.
fn rpc_pool() -> &'static DescriptorPool {
    static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(tonic_types::pb::FILE_DESCRIPTOR_SET).unwrap_or_default()
    })
}

/// A `google.rpc` message's descriptor (`google.rpc.Status`, …).
pub fn rpc_message(name: &str) -> Option<MessageDescriptor> {
    rpc_pool().get_message_by_name(name)
}

/// `status` as the JSON of `google.rpc.Status` (code, message, details
/// with their `@type`).
pub fn status_json(status: &Status) -> Json {
    let fallback = || {
        serde_json::json!({
            "code": status.code() as i32,
            "message": status.message(),
        })
    };
    if status.details().is_empty() {
        return fallback();
    }
    let Some(descriptor) = rpc_pool().get_message_by_name("google.rpc.Status") else {
        return fallback();
    };
    match DynamicMessage::decode(descriptor, status.details()) {
        Ok(decoded) => {
            let mut json = serde_json::to_value(&decoded).unwrap_or_else(|_| fallback());
            // The header's code and message are the authoritative ones.
            json["code"] = Json::from(status.code() as i32);
            json["message"] = Json::from(status.message());
            json
        }
        Err(_) => fallback(),
    }
}

/// The JSON response of an error.
pub fn error_response(status: &Status) -> http::Response<Body> {
    let body = serde_json::to_vec(&status_json(status)).unwrap_or_default();
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
    *response.status_mut() = http_status(status.code());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("grpc-status", HeaderValue::from(status.code() as i32));
    if let Some(retry) = retry_after(status) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
    }
    response
}

/// Whole seconds of the status's RetryInfo, rounded up.
fn retry_after(status: &Status) -> Option<u64> {
    use tonic_types::StatusExt as _;
    let delay = status.get_details_retry_info()?.retry_delay?;
    Some(delay.as_secs() + u64::from(delay.subsec_nanos() > 0))
}

/// The status a gRPC response carries in `headers` (trailers-only) or
/// `trailers`; a response without one is INTERNAL.
fn status_of(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Status {
    Status::from_header_map(headers)
        .or_else(|| trailers.and_then(Status::from_header_map))
        .unwrap_or_else(|| Status::internal("the service's response carried no grpc-status"))
}

/// The inner gRPC request of a JSON call: POST to the method's path with the
/// framed message, the client's headers (auth, trace context, request id)
/// as metadata, and its deadline as `grpc-timeout`.
pub fn grpc_request(
    parts: http::request::Parts,
    method: &MethodDescriptor,
    message: Vec<u8>,
    deadline: Option<Duration>,
) -> http::Request<Body> {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let mut request = http::Request::new(Body::new(http_body_util::Full::new(frame(&message))));
    *request.method_mut() = http::Method::POST;
    *request.version_mut() = http::Version::HTTP_2;
    let mut uri = http::Uri::builder().path_and_query(path);
    if let Some(authority) = parts.uri.authority() {
        uri = uri.scheme("http").authority(authority.clone());
    }
    *request.uri_mut() = uri.build().unwrap_or_default();
    *request.extensions_mut() = parts.extensions;
    let headers = request.headers_mut();
    for (name, value) in &parts.headers {
        if !is_transport_header(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.remove("grpc-timeout");
    if let Some(deadline) = deadline {
        // Milliseconds, at most 8 digits (the gRPC wire limit).
        let millis = deadline.as_millis().clamp(1, 99_999_999);
        if let Ok(value) = HeaderValue::from_str(&format!("{millis}m")) {
            headers.insert("grpc-timeout", value);
        }
    }
    request
}

/// HTTP headers that describe the JSON exchange, not the call.
fn is_transport_header(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-type"
            | "content-length"
            | "accept"
            | "accept-encoding"
            | "connection"
            | "host"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "origin"
            | "referer"
            | "cookie"
            | "connect-protocol-version"
            | "connect-timeout-ms"
            | "grpc-accept-encoding"
            | "grpc-encoding"
    ) || name.as_str().starts_with("sec-")
        || name.as_str().starts_with("access-control-")
}

/// The client's deadline: `connect-timeout-ms` (Connect's JSON-friendly
/// header, milliseconds) or `grpc-timeout`; `Err` when malformed.
pub fn client_deadline(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    if let Some(value) = headers.get("connect-timeout-ms") {
        let millis: u64 = value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|m| *m > 0 && *m <= 9_999_999_999)
            .ok_or_else(|| {
                bad(
                    "connect-timeout-ms",
                    "must be a positive whole number of milliseconds (header)",
                )
            })?;
        return Ok(Some(Duration::from_millis(millis)));
    }
    let Some(value) = headers.get("grpc-timeout") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let amount: u64 = digits
        .parse()
        .ok()
        .filter(|amount| *amount > 0 && !digits.is_empty() && digits.len() <= 8)
        .ok_or_else(|| {
            bad(
                "grpc-timeout",
                "must be 1–8 digits and a unit H, M, S, m, u or n (header)",
            )
        })?;
    let duration = match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => {
            return Err(bad(
                "grpc-timeout",
                "must be 1–8 digits and a unit H, M, S, m, u or n (header)",
            ));
        }
    };
    Ok(Some(duration))
}

/// The JSON response of a unary call's gRPC `response`.
pub async fn unary_response(
    target: &Target,
    response: http::Response<Body>,
) -> http::Response<Body> {
    let (parts, body) = response.into_parts();
    if Status::from_header_map(&parts.headers).is_some() {
        // Trailers-only: the call failed (or succeeded without a message).
        return finish_unary(target, &parts.headers, None, BytesMut::new());
    }
    match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            let bytes = BytesMut::from(collected.to_bytes().as_ref());
            finish_unary(target, &parts.headers, trailers.as_ref(), bytes)
        }
        Err(err) => error_response(&Status::unavailable(format!("the call broke off: {err}"))),
    }
}

fn finish_unary(
    target: &Target,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
    mut bytes: BytesMut,
) -> http::Response<Body> {
    let status = status_of(headers, trailers);
    if status.code() != Code::Ok {
        return error_response(&status);
    }
    let result = take_messages(&mut bytes).and_then(|messages| {
        let first = messages
            .first()
            .ok_or_else(|| Status::internal("the service answered OK without a message"))?;
        response_json(target, first)
    });
    match result {
        Ok(json) => {
            let mut response =
                http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(json))));
            let out = response.headers_mut();
            copy_response_headers(headers, out);
            out.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(status) => error_response(&status),
    }
}

/// The service's own response headers (request ids, …), without the gRPC
/// transport's.
fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let name_text = name.as_str();
        if !(name_text.starts_with("grpc-") || is_transport_header(name) || name_text == "trailer")
        {
            to.append(name.clone(), value.clone());
        }
    }
}

/// A server stream's gRPC `response` as server-sent events: each message
/// an event `message` with its JSON, then, if the stream ends with an
/// error, an event `error` with the status JSON. An error before the first
/// message is a plain JSON error response.
pub fn sse_response(target: Target, response: http::Response<Body>) -> http::Response<Body> {
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers)
        && status.code() != Code::Ok
    {
        return error_response(&status);
    }
    struct State {
        body: Body,
        buffer: BytesMut,
        target: Target,
        done: bool,
    }
    let events = futures_util::stream::unfold(
        State {
            body,
            buffer: BytesMut::new(),
            target,
            done: false,
        },
        |mut state| async move {
            loop {
                if state.done {
                    return None;
                }
                let Some(frame) = state.body.frame().await else {
                    state.done = true;
                    return Some((Ok(Bytes::from_static(b"")), state));
                };
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(err) => {
                        state.done = true;
                        let status = Status::unavailable(format!("the stream broke off: {err}"));
                        return Some((Ok(sse_event("error", &status_json(&status))), state));
                    }
                };
                if let Some(trailers) = frame.trailers_ref() {
                    state.done = true;
                    let status = status_of(trailers, None);
                    if status.code() == Code::Ok {
                        return Some((Ok(Bytes::from_static(b"")), state));
                    }
                    return Some((Ok(sse_event("error", &status_json(&status))), state));
                }
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                state.buffer.extend_from_slice(&data);
                let messages = match take_messages(&mut state.buffer) {
                    Ok(messages) => messages,
                    Err(status) => {
                        state.done = true;
                        return Some((Ok(sse_event("error", &status_json(&status))), state));
                    }
                };
                if messages.is_empty() {
                    continue;
                }
                let mut out = String::new();
                for message in messages {
                    match response_json(&state.target, &message) {
                        Ok(json) => {
                            let _ = write!(
                                out,
                                "event: message\ndata: {}\n\n",
                                String::from_utf8_lossy(&json)
                            );
                        }
                        Err(status) => {
                            state.done = true;
                            out.push_str(&String::from_utf8_lossy(&sse_event(
                                "error",
                                &status_json(&status),
                            )));
                            break;
                        }
                    }
                }
                return Some((Ok::<_, std::convert::Infallible>(Bytes::from(out)), state));
            }
        },
    );
    let body = http_body_util::StreamBody::new(futures_util::StreamExt::map(events, |chunk| {
        chunk.map(http_body::Frame::data)
    }));
    let mut response = http::Response::new(Body::new(body));
    let out = response.headers_mut();
    copy_response_headers(&parts.headers, out);
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn sse_event(name: &str, json: &Json) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}
