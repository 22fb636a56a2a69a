//! The OpenAPI 3.1 document of one server's HTTP surface, generated from the
//! descriptors compiled into the binary and their `google.api.http` rules
//! (so it cannot drift from what the gateway serves): every REST route and
//! every Connect path, their parameters, request and response schemas (the
//! proto3 JSON mapping, [`crate::schema`]), the bearer scheme, and the error
//! shape (`google.rpc.Status`). Each server serves its own at
//! `GET /openapi.json`; `docs/openapi/<service>.json` are the committed
//! copies, checked by a test (`BACKROOM_UPDATE_DOCS=1` rewrites them).
//!
//! A path variable that binds several segments (`{name=products/*}`) is
//! written the way OpenAPI can say it: its literal segments in the path and
//! one parameter per wildcard, named after the collection before it
//! (`/v1/products/{product}`); the gateway binds `name` to
//! `products/<product>` again.

use std::collections::BTreeMap;

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor, MethodDescriptor};
use serde_norway::{Mapping, Value};

use super::routes::{BodyRule, HttpRoute, RouteTable};
use crate::schema::{Schemas, comment, first_paragraph, map, s, schema_ref};

/// The error shape, in `components.schemas`.
const STATUS: &str = "google.rpc.Status";

/// The document of a server serving `services` (full names) with `routes`,
/// titled after `title` (e.g. `inventory`), as pretty JSON.
pub fn document(
    pool: &DescriptorPool,
    services: &[&str],
    routes: &RouteTable,
    title: &str,
) -> String {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Mapping> = BTreeMap::new();
    let mut tags = Vec::new();
    for name in services {
        let Some(service) = pool.get_service_by_name(name) else {
            continue;
        };
        let file = service.parent_file_descriptor_proto();
        let mut tag = Mapping::new();
        tag.insert(s("name"), s(service.name()));
        if let Some(text) = comment(file, service.path()) {
            tag.insert(s("description"), s(text));
        }
        tags.push(Value::Mapping(tag));
        for method in service.methods() {
            for route in routes
                .http
                .iter()
                .filter(|r| r.method.full_name() == method.full_name())
            {
                let (path, parameters) = rest_path(route);
                let operation = operation(&mut schemas, route, &method, parameters);
                paths
                    .entry(path)
                    .or_default()
                    .insert(s(route.verb.as_str().to_ascii_lowercase()), operation);
            }
            let connect = format!("/{}/{}", service.full_name(), method.name());
            let operation = connect_operation(&mut schemas, &method);
            paths
                .entry(connect)
                .or_default()
                .insert(s("post"), operation);
        }
    }
    if let Some(status) = super::transcode::rpc_message(STATUS) {
        schemas.message(&status);
    }
    let mut components = Mapping::new();
    components.insert(s("schemas"), map(schemas.done));
    components.insert(
        s("securitySchemes"),
        map([(
            "bearer",
            map([
                ("type", s("http")),
                ("scheme", s("bearer")),
                ("bearerFormat", s("JWT")),
                (
                    "description",
                    s("An access token from AccountService Login (`POST /v1/accounts:login`) or IssueServiceToken."),
                ),
            ]),
        )]),
    );
    components.insert(
        s("responses"),
        map([(
            "Error",
            map([
                (
                    "description",
                    s("The call failed: a `google.rpc.Status` (gRPC code, message, details such as ErrorInfo, BadRequest, RetryInfo), with the HTTP status AIP-193 maps the code to."),
                ),
                ("content", json_content(schema_ref(STATUS))),
            ]),
        )]),
    );
    let document = map([
        ("openapi", s("3.1.0")),
        (
            "info",
            map([
                ("title", s(format!("Backroom {title} API"))),
                ("version", s("v1")),
                (
                    "description",
                    s(format!(
                        "The {title} service's HTTP surface, on its gRPC port: REST routes (`/v1/...`, from the protos' `google.api.http` rules) and Connect-style JSON (`POST /<package>.<Service>/<Method>`), both canonical proto3 JSON. Server streams are server-sent events (`event: message`, then `event: error` if the stream fails)."
                    )),
                ),
            ]),
        ),
        (
            "security",
            Value::Sequence(vec![map([("bearer", Value::Sequence(vec![]))])]),
        ),
        ("tags", Value::Sequence(tags)),
        (
            "paths",
            Value::Mapping(
                paths
                    .into_iter()
                    .map(|(k, v)| (s(k), Value::Mapping(v)))
                    .collect(),
            ),
        ),
        ("components", Value::Mapping(components)),
    ]);
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}

/// The OpenAPI path of a route and its path parameters (name, field path
/// it fills, the collection it names).
fn rest_path(route: &HttpRoute) -> (String, Vec<(String, String)>) {
    let text = &route.template.text;
    let mut path = String::new();
    let mut parameters = Vec::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| c + open);
        let variable = &rest[open + 1..close];
        let (field, pattern) = variable.split_once('=').unwrap_or((variable, "*"));
        let mut previous = field.rsplit('.').next().unwrap_or(field).to_owned();
        let segments: Vec<String> = pattern
            .split('/')
            .map(|segment| match segment {
                "*" | "**" => {
                    let name = singular(&previous);
                    parameters.push((name.clone(), field.to_owned()));
                    format!("{{{name}}}")
                }
                literal => {
                    previous = literal.to_owned();
                    literal.to_owned()
                }
            })
            .collect();
        path.push_str(&segments.join("/"));
        rest = &rest[(close + 1).min(rest.len())..];
    }
    path.push_str(rest);
    (path, parameters)
}

/// `products` → `product`, `addresses` → `address`, `entries` → `entry`.
fn singular(collection: &str) -> String {
    if let Some(stem) = collection.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = collection.strip_suffix("sses") {
        format!("{stem}ss")
    } else if let Some(stem) = collection.strip_suffix('s') {
        stem.to_owned()
    } else {
        collection.to_owned()
    }
}

/// One server-sent event: `event` message or error, `data` the JSON of an
/// `item` or of the status that ended the stream.
fn sse_event(item: Value) -> Value {
    let event = map([("enum", Value::Sequence(vec![s("message"), s("error")]))]);
    let data = map([
        ("type", s("string")),
        ("contentMediaType", s("application/json")),
        (
            "contentSchema",
            map([("anyOf", Value::Sequence(vec![item, schema_ref(STATUS)]))]),
        ),
    ]);
    map([
        ("type", s("object")),
        ("required", Value::Sequence(vec![s("data")])),
        ("properties", map([("event", event), ("data", data)])),
    ])
}

fn json_content(schema: Value) -> Value {
    map([("application/json", map([("schema", schema)]))])
}

fn summary_and_description(method: &MethodDescriptor, out: &mut Mapping) {
    let file = method.parent_service().parent_file_descriptor_proto();
    if let Some(text) = comment(file, method.path()) {
        out.insert(s("summary"), s(first_paragraph(&text)));
        out.insert(s("description"), s(text));
    }
}

fn responses(
    schemas: &mut Schemas,
    method: &MethodDescriptor,
    response_body: Option<&str>,
) -> Value {
    let output = method.output();
    let ok = if method.is_server_streaming() {
        let item = schemas.message(&output);
        map([
            (
                "description",
                s(format!(
                    "A stream of server-sent events: `event: message` with a `{}` (JSON) each, then `event: error` with a `google.rpc.Status` if the stream fails.",
                    output.full_name()
                )),
            ),
            (
                "content",
                map([(
                    "text/event-stream",
                    // One event (OpenAPI 3.1 has no itemSchema: tools such
                    // as schemathesis read `schema` as the per-event one).
                    map([("schema", sse_event(item))]),
                )]),
            ),
        ])
    } else {
        let schema = match response_body.and_then(|field| output.get_field_by_name(field)) {
            Some(field) => schemas.field(&field),
            None => schemas.message(&output),
        };
        map([("description", s("OK")), ("content", json_content(schema))])
    };
    map([
        ("200", ok),
        (
            "default",
            map([("$ref", s("#/components/responses/Error"))]),
        ),
    ])
}

fn operation(
    schemas: &mut Schemas,
    route: &HttpRoute,
    method: &MethodDescriptor,
    path_parameters: Vec<(String, String)>,
) -> Value {
    let mut out = Mapping::new();
    out.insert(
        s("operationId"),
        s(format!(
            "{}_{}",
            method.parent_service().name(),
            method.name()
        )),
    );
    out.insert(
        s("tags"),
        Value::Sequence(vec![s(method.parent_service().name())]),
    );
    summary_and_description(method, &mut out);
    let input = method.input();
    let mut parameters: Vec<Value> = path_parameters
        .iter()
        .map(|(name, field)| {
            map([
                ("name", s(name)),
                ("in", s("path")),
                ("required", Value::Bool(true)),
                (
                    "description",
                    s(format!(
                        "A segment of `{field}` (`{}`).",
                        route.template.text
                    )),
                ),
                (
                    "schema",
                    map([("type", s("string")), ("pattern", s("^[^/]+$"))]),
                ),
            ])
        })
        .collect();
    let bound: Vec<&str> = route.template.variables().collect();
    let body_field = match &route.body {
        BodyRule::Field(field) => Some(field.as_str()),
        _ => None,
    };
    if route.body != BodyRule::Whole {
        query_parameters(schemas, &input, "", &bound, body_field, 0, &mut parameters);
    }
    if !parameters.is_empty() {
        out.insert(s("parameters"), Value::Sequence(parameters));
    }
    match &route.body {
        BodyRule::None => {}
        BodyRule::Whole => {
            out.insert(
                s("requestBody"),
                map([
                    ("required", Value::Bool(true)),
                    ("content", json_content(schemas.message(&input))),
                ]),
            );
        }
        BodyRule::Field(field) => {
            if let Some(field) = input.get_field_by_name(field) {
                out.insert(
                    s("requestBody"),
                    map([
                        ("required", Value::Bool(true)),
                        ("content", json_content(schemas.field(&field))),
                    ]),
                );
            }
        }
    }
    out.insert(
        s("responses"),
        responses(schemas, method, route.response_body.as_deref()),
    );
    Value::Mapping(out)
}

fn connect_operation(schemas: &mut Schemas, method: &MethodDescriptor) -> Value {
    let mut out = Mapping::new();
    out.insert(
        s("operationId"),
        s(format!(
            "{}_{}_connect",
            method.parent_service().name(),
            method.name()
        )),
    );
    out.insert(
        s("tags"),
        Value::Sequence(vec![s(method.parent_service().name())]),
    );
    summary_and_description(method, &mut out);
    out.insert(
        s("requestBody"),
        map([
            ("required", Value::Bool(true)),
            ("content", json_content(schemas.message(&method.input()))),
        ]),
    );
    out.insert(s("responses"), responses(schemas, method, None));
    Value::Mapping(out)
}

/// The query parameters of a route: the scalar fields (and lists of them)
/// of the request that the path does not bind and the body does not hold,
/// nested messages' as `a.b`.
fn query_parameters(
    schemas: &mut Schemas,
    message: &MessageDescriptor,
    prefix: &str,
    bound: &[&str],
    body: Option<&str>,
    depth: usize,
    out: &mut Vec<Value>,
) {
    for field in message.fields() {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        if bound.contains(&path.as_str()) || body == Some(path.as_str()) || field.is_map() {
            continue;
        }
        match field.kind() {
            Kind::Message(inner) if !is_scalar_message(&inner) => {
                if !field.is_list() && depth < 2 {
                    query_parameters(schemas, &inner, &path, bound, body, depth + 1, out);
                }
            }
            _ => {
                let file = field.parent_message().parent_file_descriptor_proto();
                let schema = schemas.field(&field);
                let mut parameter = Mapping::new();
                parameter.insert(s("name"), s(json_name_path(prefix, field.json_name())));
                parameter.insert(s("in"), s("query"));
                if let Some(text) = comment(file, field.path()) {
                    parameter.insert(s("description"), s(text));
                }
                parameter.insert(s("schema"), schema);
                if field.is_list() {
                    parameter.insert(s("explode"), Value::Bool(true));
                }
                out.push(Value::Mapping(parameter));
            }
        }
    }
}

fn json_name_path(prefix: &str, json_name: &str) -> String {
    if prefix.is_empty() {
        json_name.to_owned()
    } else {
        format!("{prefix}.{json_name}")
    }
}

/// Well-known types whose JSON is a scalar (a string).
fn is_scalar_message(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.BytesValue"
    )
}
