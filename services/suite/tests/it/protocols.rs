//! Every RPC of every service three ways on the same port — gRPC (the raw
//! framed message), Connect-style JSON (`POST /<pkg>.<Service>/<Method>`,
//! over HTTP/1.1) and its REST route from the protos' `google.api.http`
//! (over HTTP/2) — with the same answers and the same errors: the same
//! response message, or the same code, message and details (ErrorInfo,
//! BadRequest) with the HTTP status AIP-193 maps the code to.
//!
//! Requests are built from the descriptors, so an RPC added later is
//! covered without touching this test: for every RPC a request whose path
//! fields hold names that exist nowhere, called without a token and as the
//! admin; then real requests (reads of what exists; writes replayed with
//! their request id, so each protocol must rebuild the very same message
//! to get the same answer).

use std::collections::BTreeMap;

use backroom_shared::{
    client::TracedChannel,
    config::ServerConfig,
    gateway::{
        GatewayLayer,
        routes::{BodyRule, HttpRoute},
        transcode::{http_status, status_json},
    },
};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use serde_json::{Map, Value as Json, json};

use crate::{
    harness::{Suite, VISA},
    shipments::request_id,
};

/// What one call answered, comparable across protocols.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The response (a server stream's first message).
    Ok(Json),
    /// A server stream still open, without a message, after a while.
    Open,
    /// An error: code, message, details.
    Err(i64, String, Json),
}

/// One port and the services it serves.
struct Port {
    endpoint: String,
    channel: TracedChannel,
    services: Vec<&'static str>,
}

impl Port {
    fn routes(&self, method: &MethodDescriptor) -> Vec<HttpRoute> {
        GatewayLayer::new(&self.services, &ServerConfig::default())
            .unwrap()
            .routes()
            .http
            .iter()
            .filter(|r| r.method.full_name() == method.full_name())
            .cloned()
            .collect()
    }
}

/// The three ports and the services each serves.
async fn ports(suite: &Suite) -> Vec<Port> {
    let inventory = {
        let guard = suite.inventory.lock().await;
        let server = guard.as_ref().unwrap();
        (server.endpoint(), server.channel.clone())
    };
    let common = [
        "backroom.events.v1.EventService",
        "backroom.events.v1.WebhookService",
    ];
    vec![
        Port {
            endpoint: suite.account.endpoint(),
            channel: suite.account.channel.clone(),
            services: [&["backroom.account.v1.AccountService"][..], &common].concat(),
        },
        Port {
            endpoint: inventory.0,
            channel: inventory.1,
            services: [&["backroom.inventory.v1.InventoryService"][..], &common].concat(),
        },
        Port {
            endpoint: suite.payment.endpoint(),
            channel: suite.payment.channel.clone(),
            services: [
                &[
                    "backroom.payment.v1.PaymentService",
                    "backroom.payment.v1.CheckoutService",
                ][..],
                &common,
            ]
            .concat(),
        },
    ]
}

fn method(name: &str) -> MethodDescriptor {
    let (service, method) = name.rsplit_once('/').unwrap();
    backroom_shared::gateway::descriptors()
        .get_service_by_name(service)
        .unwrap_or_else(|| panic!("no service {service}"))
        .methods()
        .find(|m| m.name() == method)
        .unwrap_or_else(|| panic!("no method {name}"))
}

fn error_outcome(json: &Json) -> Outcome {
    Outcome::Err(
        json["code"].as_i64().unwrap_or(-1),
        json["message"].as_str().unwrap_or_default().to_owned(),
        json.get("details").cloned().unwrap_or(Json::Array(vec![])),
    )
}

/// gRPC: the request message encoded from `request`, over the port's
/// HTTP/2 channel.
async fn grpc(port: &Port, method: &MethodDescriptor, token: &str, request: &Json) -> Outcome {
    let message = DynamicMessage::deserialize(method.input(), request.clone())
        .unwrap_or_else(|err| panic!("{}: request {request}: {err}", method.full_name()));
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let bearer = format!("Bearer {token}");
    let metadata: Vec<(&str, &str)> = if token.is_empty() {
        vec![]
    } else {
        vec![("authorization", bearer.as_str())]
    };
    match crate::harness::raw_call_answer(
        port.channel.clone(),
        &path,
        &metadata,
        message.encode_to_vec(),
        method.is_server_streaming(),
    )
    .await
    {
        Ok(Some(bytes)) => {
            let answer = DynamicMessage::decode(method.output(), bytes.as_slice()).unwrap();
            Outcome::Ok(serde_json::to_value(&answer).unwrap())
        }
        Ok(None) => Outcome::Open,
        Err(status) => error_outcome(&status_json(&status)),
    }
}

/// An HTTP answer: JSON, an error with its HTTP status checked, or a
/// server-sent event stream's first event.
async fn answer(method: &MethodDescriptor, response: reqwest::Response) -> Outcome {
    let status = response.status();
    let is_sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_sse {
        assert_eq!(status, 200);
        let mut response = response;
        let mut text = String::new();
        let first = tokio::time::timeout(std::time::Duration::from_millis(300), async {
            while let Ok(Some(chunk)) = response.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if let Some((event, _)) = text.split_once("\n\n") {
                    return Some(event.to_owned());
                }
            }
            None
        })
        .await;
        let Ok(Some(event)) = first else {
            return Outcome::Open;
        };
        let kind = event
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or_default();
        let data: Json = event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .unwrap();
        return match kind {
            "message" => Outcome::Ok(data),
            _ => error_outcome(&data),
        };
    }
    let body = response.bytes().await.unwrap();
    let json: Json = serde_json::from_slice(&body)
        .unwrap_or_else(|err| panic!("{}: not JSON ({err}): {body:?}", method.full_name()));
    if status == 200 {
        return Outcome::Ok(json);
    }
    let outcome = error_outcome(&json);
    if let Outcome::Err(code, _, _) = &outcome {
        let code = tonic::Code::from_i32(i32::try_from(*code).unwrap());
        assert_eq!(
            status.as_u16(),
            http_status(code).as_u16(),
            "{}: HTTP status of {code:?}",
            method.full_name()
        );
    }
    outcome
}

fn client(http2: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder();
    if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    }
    .build()
    .unwrap()
}

async fn connect(port: &Port, method: &MethodDescriptor, token: &str, request: &Json) -> Outcome {
    let url = format!(
        "{}/{}/{}",
        port.endpoint,
        method.parent_service().full_name(),
        method.name()
    );
    let mut call = client(false)
        .post(url)
        .header("content-type", "application/json")
        .body(request.to_string());
    if !token.is_empty() {
        call = call.bearer_auth(token);
    }
    answer(method, call.send().await.unwrap()).await
}

/// The value at `path` (dotted proto names) of `request`, removed.
fn take(method: &MethodDescriptor, request: &mut Json, path: &str) -> Option<Json> {
    let fields = backroom_shared::gateway::routes::field_path(&method.input(), path)?;
    let mut at = request;
    for field in &fields[..fields.len() - 1] {
        at = at.get_mut(field.json_name())?;
    }
    at.as_object_mut()?.remove(fields.last()?.json_name())
}

/// The route's URL path with `bound` values in place of its variables.
fn fill(template: &str, bound: &BTreeMap<String, String>) -> String {
    let mut path = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let close = rest[open..].find('}').unwrap() + open;
        let variable = &rest[open + 1..close];
        let field = variable.split('=').next().unwrap();
        let value = &bound[field];
        let encoded: Vec<String> = value
            .split('/')
            .map(|s| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect();
        path.push_str(&encoded.join("/"));
        rest = &rest[close + 1..];
    }
    path.push_str(rest);
    path
}

/// The query string of what is left of `request` (scalars and lists of
/// them, dotted paths for nested messages).
fn query(prefix: &str, value: &Json, out: &mut Vec<(String, String)>) {
    match value {
        Json::Object(fields) => {
            for (name, value) in fields {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                query(&path, value, out);
            }
        }
        Json::Array(items) => {
            for item in items {
                query(prefix, item, out);
            }
        }
        Json::String(text) => out.push((prefix.to_owned(), text.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

async fn rest(
    port: &Port,
    method: &MethodDescriptor,
    token: &str,
    request: &Json,
) -> Option<Outcome> {
    let route = port.routes(method).into_iter().next()?;
    let mut request = request.clone();
    let mut bound = BTreeMap::new();
    for variable in route.template.variables() {
        let value = take(method, &mut request, variable)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("{}: no value for {variable}", method.full_name()));
        bound.insert(variable.to_owned(), value);
    }
    let url = format!("{}{}", port.endpoint, fill(&route.template.text, &bound));
    let mut call = client(true).request(route.verb.clone(), url);
    match &route.body {
        BodyRule::Whole => {
            call = call
                .header("content-type", "application/json")
                .body(request.to_string());
        }
        BodyRule::Field(field) => {
            // An absent field is an empty body.
            let body =
                take(method, &mut request, field).map_or_else(String::new, |b| b.to_string());
            let mut pairs = Vec::new();
            query("", &request, &mut pairs);
            call = call
                .query(&pairs)
                .header("content-type", "application/json")
                .body(body);
        }
        BodyRule::None => {
            let mut pairs = Vec::new();
            query("", &request, &mut pairs);
            call = call.query(&pairs);
        }
    }
    if !token.is_empty() {
        call = call.bearer_auth(token);
    }
    Some(answer(method, call.send().await.unwrap()).await)
}

/// Calls `method` three ways and asserts the same outcome; returns it.
async fn three_ways(
    port: &Port,
    method: &MethodDescriptor,
    token: &str,
    request: &Json,
) -> Outcome {
    let by_grpc = grpc(port, method, token, request).await;
    let by_connect = connect(port, method, token, request).await;
    assert_eq!(
        by_connect,
        by_grpc,
        "{}: Connect-JSON and gRPC answer {request} differently",
        method.full_name()
    );
    if let Some(by_rest) = rest(port, method, token, request).await {
        assert_eq!(
            by_rest,
            by_grpc,
            "{}: REST and gRPC answer {request} differently",
            method.full_name()
        );
    }
    by_grpc
}

/// A request whose path variables name resources that exist nowhere.
fn placeholder_request(port: &Port, method: &MethodDescriptor) -> Json {
    let mut request = Json::Object(Map::new());
    if let Some(route) = port.routes(method).first() {
        for variable in route.template.variables() {
            let text = &route.template.text;
            let start = text.find(&format!("{{{variable}")).unwrap();
            let end = text[start..].find('}').unwrap() + start;
            let pattern = text[start + 1..end].split_once('=').map_or("*", |(_, p)| p);
            let value = pattern.replace("**", "nowhere").replace('*', "nowhere");
            let fields =
                backroom_shared::gateway::routes::field_path(&method.input(), variable).unwrap();
            let mut at = &mut request;
            for field in &fields[..fields.len() - 1] {
                at = at
                    .as_object_mut()
                    .unwrap()
                    .entry(field.json_name().to_owned())
                    .or_insert_with(|| json!({}));
            }
            at[fields.last().unwrap().json_name()] = Json::String(value);
        }
    }
    request
}

#[tokio::test]
async fn every_rpc_answers_the_same_over_grpc_connect_json_and_rest() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    let ada = suite.customer("three-ways@example.com", VISA).await;
    let ports = ports(&suite).await;

    // Every RPC: without a token, and as the admin on names that exist
    // nowhere.
    let mut calls = 0;
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    for port in &ports {
        for service in &port.services {
            let descriptor = backroom_shared::gateway::descriptors()
                .get_service_by_name(service)
                .unwrap();
            for method in descriptor.methods() {
                // Every RPC declares its REST route (google.api.http).
                assert!(
                    !port.routes(&method).is_empty(),
                    "{} has no REST route: annotate it",
                    method.full_name()
                );
                let request = placeholder_request(port, &method);
                for token in ["", suite.admin.as_str()] {
                    let outcome = three_ways(port, &method, token, &request).await;
                    calls += 1;
                    let code = match &outcome {
                        Outcome::Ok(_) => "OK".to_owned(),
                        Outcome::Open => "open stream".to_owned(),
                        Outcome::Err(code, _, _) => {
                            format!("{:?}", tonic::Code::from_i32(i32::try_from(*code).unwrap()))
                        }
                    };
                    assert!(
                        !matches!(code.as_str(), "Internal" | "Unknown" | "Unimplemented"),
                        "{}: {outcome:?}",
                        method.full_name()
                    );
                    *by_code.entry(code).or_default() += 1;
                }
            }
        }
    }
    println!("{calls} RPC calls, each three ways, answered alike: {by_code:?}");

    // Real requests: reads of what exists, writes replayed by request id.
    let account = &ports[0];
    let stock = &ports[1];
    let payment = &ports[2];
    let me = three_ways(
        account,
        &method("backroom.account.v1.AccountService/GetAccount"),
        &ada.token,
        &json!({"name": "accounts/me"}),
    )
    .await;
    assert!(
        matches!(&me, Outcome::Ok(a) if a["email"] == "three-ways@example.com"),
        "{me:?}"
    );
    let product = three_ways(
        stock,
        &method("backroom.inventory.v1.InventoryService/GetProduct"),
        &ada.token,
        &json!({"name": "products/MUG"}),
    )
    .await;
    assert!(
        matches!(&product, Outcome::Ok(p) if p["sku"] == "MUG"),
        "{product:?}"
    );
    let listed = three_ways(
        stock,
        &method("backroom.inventory.v1.InventoryService/ListProducts"),
        &ada.token,
        &json!({"pageSize": 10}),
    )
    .await;
    assert!(
        matches!(&listed, Outcome::Ok(l) if l["products"][0]["sku"] == "MUG"),
        "{listed:?}"
    );
    three_ways(
        stock,
        &method("backroom.inventory.v1.InventoryService/GetStockLevel"),
        &suite.admin,
        &json!({"name": "products/MUG/stockLevels/main"}),
    )
    .await;
    // PlaceOrder, then its replays (same request id) once it is terminal:
    // each protocol must rebuild the same message to get the same order.
    let place = method("backroom.payment.v1.CheckoutService/PlaceOrder");
    let order_request = json!({
        "customer": ada.name,
        "lines": [{"sku": "MUG", "quantity": 2}],
        "paymentMethod": ada.card,
        "shippingAddress": ada.address,
        "currencyCode": "EUR",
        "requestId": request_id(),
    });
    let Outcome::Ok(order) = grpc(payment, &place, &ada.token, &order_request).await else {
        panic!("PlaceOrder failed")
    };
    let get_order = method("backroom.payment.v1.CheckoutService/GetOrder");
    let name = json!({"name": order["name"]});
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let Outcome::Ok(now) = grpc(payment, &get_order, &ada.token, &name).await else {
            panic!("GetOrder failed")
        };
        if now["state"] == "ORDER_STATE_COMPLETED" || now["state"] == "ORDER_STATE_FAILED" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the order never finished: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let replayed = three_ways(payment, &place, &ada.token, &order_request).await;
    assert!(
        matches!(&replayed, Outcome::Ok(o) if o["state"] == "ORDER_STATE_COMPLETED"),
        "{replayed:?}"
    );
    three_ways(payment, &get_order, &ada.token, &name).await;
    // Validation errors name the same fields every way.
    let refused = three_ways(
        payment,
        &method("backroom.payment.v1.CheckoutService/PlaceOrder"),
        &ada.token,
        &json!({"customer": ada.name, "lines": [{"sku": "MUG", "quantity": -1}], "requestId": "not-a-uuid"}),
    )
    .await;
    assert!(
        matches!(&refused, Outcome::Err(3, _, details) if details.to_string().contains("lines[0].quantity")),
        "{refused:?}"
    );
}

/// The servers' request size limit (`BACKROOM_MAX_MESSAGE_BYTES` default).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The committed copies of the served OpenAPI documents.
const OPENAPI_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi");

#[tokio::test]
async fn every_server_serves_its_openapi_document_and_the_committed_copy_is_fresh() {
    let suite = Suite::spawn().await;
    let update = std::env::var("BACKROOM_UPDATE_DOCS").as_deref() == Ok("1");
    for (name, port) in ["account", "inventory", "payment"]
        .into_iter()
        .zip(ports(&suite).await)
    {
        let response = client(false)
            .get(format!("{}/openapi.json", port.endpoint))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let served = response.text().await.unwrap();
        let document: Json = serde_json::from_str(&served).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        // Every RPC of every service on the port has its Connect path.
        for service in &port.services {
            let descriptor = backroom_shared::gateway::descriptors()
                .get_service_by_name(service)
                .unwrap();
            for method in descriptor.methods() {
                let path = format!("/{}/{}", descriptor.full_name(), method.name());
                assert!(
                    document["paths"][&path]["post"].is_object(),
                    "{name}: {path} missing"
                );
                for route in port.routes(&method) {
                    assert!(
                        document["paths"].as_object().unwrap().values().any(|p| p
                            [route.verb.as_str().to_ascii_lowercase()]["operationId"]
                            == format!("{}_{}", descriptor.name(), method.name())),
                        "{name}: no REST operation for {}",
                        method.full_name()
                    );
                }
            }
        }
        let committed = std::path::Path::new(OPENAPI_DIR).join(format!("{name}.json"));
        if update {
            std::fs::create_dir_all(OPENAPI_DIR).unwrap();
            std::fs::write(&committed, &served).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&committed).unwrap_or_default();
        assert!(
            on_disk == served,
            "docs/openapi/{name}.json is missing or stale: regenerate with\n\n    BACKROOM_UPDATE_DOCS=1 cargo test -p backroom --test it protocols::every_server_serves\n\nand commit the result"
        );
    }
}

/// Hostile JSON for every Connect path and REST route of every port:
/// malformed bodies, wrong types, unknown fields, oversized and deeply
/// nested bodies, bytes that are not UTF-8, unknown query parameters.
/// Every answer is a 400 `google.rpc.Status` (INVALID_ARGUMENT with a
/// BadRequest naming what is wrong) — never a 5xx — and unknown paths and
/// verbs are 404 and 405.
#[tokio::test]
async fn hostile_json_gets_a_clear_400_never_a_5xx() {
    let suite = Suite::spawn().await;
    let http = client(false);
    let deep = format!("{}1{}", "{\"a\":".repeat(500), "}".repeat(500));
    let huge = format!("{{\"x\":\"{}\"}}", "y".repeat(5 * 1024 * 1024));
    let mut checked = 0;
    for port in ports(&suite).await {
        for service in &port.services {
            let descriptor = backroom_shared::gateway::descriptors()
                .get_service_by_name(service)
                .unwrap();
            for method in descriptor.methods() {
                let input = method.input();
                let string_field = input
                    .fields()
                    .find(|f| matches!(f.kind(), prost_reflect::Kind::String) && !f.is_list());
                let mut bodies: Vec<(String, Vec<u8>)> = vec![
                    ("truncated".into(), b"{".to_vec()),
                    ("an array".into(), b"[]".to_vec()),
                    ("a string".into(), b"\"x\"".to_vec()),
                    ("null".into(), b"null".to_vec()),
                    ("an unknown field".into(), b"{\"noSuchField\": 1}".to_vec()),
                    ("not UTF-8".into(), b"{\"a\": \"\xff\xfe\"}".to_vec()),
                    ("nested 500 deep".into(), deep.clone().into_bytes()),
                    ("over the size limit".into(), huge.clone().into_bytes()),
                ];
                if let Some(field) = &string_field {
                    bodies.push((
                        format!("a number for {}", field.json_name()),
                        format!("{{\"{}\": 12}}", field.json_name()).into_bytes(),
                    ));
                }
                let url = format!(
                    "{}/{}/{}",
                    port.endpoint,
                    descriptor.full_name(),
                    method.name()
                );
                for (what, body) in &bodies {
                    let sent = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .bearer_auth(&suite.admin)
                        .body(body.clone())
                        .send()
                        .await;
                    // Over the limit the server answers 400 at once and
                    // closes the connection rather than read the rest: the
                    // client may see the close before the answer.
                    let response = match sent {
                        Err(err) if body.len() > MAX_BODY => {
                            assert!(!err.is_timeout(), "{}: {what}: {err}", method.full_name());
                            checked += 1;
                            continue;
                        }
                        sent => sent.unwrap(),
                    };
                    let status = response.status();
                    let json: Json = serde_json::from_slice(&response.bytes().await.unwrap())
                        .unwrap_or(Json::Null);
                    assert_eq!(
                        (status.as_u16(), json["code"].as_i64()),
                        (400, Some(3)),
                        "{}: {what}: {json}",
                        method.full_name()
                    );
                    assert!(
                        json["details"].to_string().contains("fieldViolations"),
                        "{}: {what}: no field named: {json}",
                        method.full_name()
                    );
                    checked += 1;
                }
                // REST: an unknown query parameter on GET routes.
                for route in port.routes(&method) {
                    if route.verb != http::Method::GET {
                        continue;
                    }
                    let mut request = placeholder_request(&port, &method);
                    let mut bound = BTreeMap::new();
                    for variable in route.template.variables() {
                        let value = take(&method, &mut request, variable).unwrap();
                        bound.insert(variable.to_owned(), value.as_str().unwrap().to_owned());
                    }
                    let url = format!(
                        "{}{}?noSuchParameter=1",
                        port.endpoint,
                        fill(&route.template.text, &bound)
                    );
                    let response = http
                        .get(url)
                        .bearer_auth(&suite.admin)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 400, "{}", method.full_name());
                    let json: Json =
                        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
                    assert!(json.to_string().contains("noSuchParameter"), "{json}");
                    checked += 1;
                    // A path variable again as a query parameter, in its
                    // JSON spelling: refused, never an override.
                    for variable in route.template.variables() {
                        let fields =
                            backroom_shared::gateway::routes::field_path(&method.input(), variable)
                                .unwrap();
                        let json_name: Vec<&str> = fields.iter().map(|f| f.json_name()).collect();
                        let url = format!(
                            "{}{}?{}=accounts/other",
                            port.endpoint,
                            fill(&route.template.text, &bound),
                            json_name.join(".")
                        );
                        let response = http
                            .get(url)
                            .bearer_auth(&suite.admin)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(response.status(), 400, "{}: {variable}", method.full_name());
                        checked += 1;
                    }
                }
            }
        }
        let response = http
            .get(format!("{}/v1/noSuchCollection", port.endpoint))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        let response = http
            .put(format!("{}/openapi.json", port.endpoint))
            .send()
            .await
            .unwrap();
        assert!(response.status() == 404 || response.status() == 405);
    }
    println!("{checked} hostile JSON requests, every one a 400 naming what is wrong");
    suite.audit().await;
}
