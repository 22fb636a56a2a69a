//! [`document`] builds it from the descriptors compiled into the binary
//! ([`api::descriptors`], with the protos' comments), so it cannot drift from
//! the protos: the event types are [`api::known_types`] of every service that
//! has a `backroom/<service>/v1/events.proto`, the channels are the relay's
//! subjects ([`relay::subject`]), every description is the proto comment.
//! `docs/events.asyncapi.yaml` is its committed copy; a test fails when the
//! two differ, and `BACKROOM_UPDATE_DOCS=1 cargo test -p backroom-shared
//! --lib asyncapi` rewrites the file.
//!
//! The document: one `nats` server (`BACKROOM_NATS_URL`); per event type a
//! channel (address = its NATS subject), a `receive` operation and a message
//! (`application/x-protobuf`, the relay's headers, and as payload the JSON
//! schema of the envelope with that type's payload); `components.schemas`
//! holds a JSON schema of every message and enum the events reach.
//!
//! Schemas follow the proto3 JSON mapping, which is what webhooks deliver
//! (prost-reflect's serializer, [`super::webhooks::envelope_json`]):
//! lowerCamelCase property names; 64-bit integers as decimal strings; enums
//! as a string enum of the value names; `Timestamp` as a `date-time` string,
//! `Duration` as `"<seconds>s"`, wrappers as their wrapped value, `Any` as an
//! object with `@type`, `Struct`/`Value`/`ListValue` as free JSON; bytes as
//! base64 strings; repeated fields as arrays, maps as objects with
//! `additionalProperties`. Default values are left out of proto3 JSON, so no
//! property of a message schema is required, and every member of a oneof is
//! an optional property (its description names the oneof). Message schemas
//! stay open to unknown properties: fields get added within v1.
//!
//! Order: the document's own keys in the order of the AsyncAPI spec, every
//! set of names (channels, operations, messages, schemas, tags) sorted, the
//! properties of a schema in field order, enum values in declaration order;
//! nothing depends on a hash map, so the output is byte-for-byte stable.
//!
//! Layout: [`document`], the parts of the document (info, servers, channels,
//! operations, components), the JSON schemas ([`Schemas`]), the comments,
//! then the YAML helpers.

use std::collections::{BTreeMap, BTreeSet};

use backroom_proto::events::v1 as pb;
use prost::Name as _;
use prost_reflect::{DescriptorPool, MessageDescriptor};
use serde_norway::{Mapping, Value};

use super::{api, read, relay};
use crate::schema::{
    Schemas, file_comment, first_paragraph, map, message_comment, reference, s, schema_ref,
};

/// How the relay encodes an event: the protobuf envelope.
const PROTOBUF: &str = "application/x-protobuf";
/// The one server: the relay's NATS.
const SERVER: &str = "nats";
/// The schema of the relay's NATS headers, in `components.schemas` (not a
/// protobuf name: those all have a package).
const HEADERS: &str = "JetStreamHeaders";
/// The envelope's properties every published event has (proto3 JSON leaves
/// out defaults, but these are never empty; `traceparent` can be).
const ALWAYS_SET: [&str; 7] = [
    "id", "type", "source", "subject", "time", "sequence", "payload",
];

/// The AsyncAPI 3.0.0 document of every event type Backroom publishes, as
/// YAML (see the module docs).
pub fn document() -> String {
    let pool = api::descriptors();
    let envelope = pool
        .get_message_by_name(&pb::Event::full_name())
        .expect("the compiled-in descriptor set holds the event envelope");
    let events = event_types(pool, &envelope);
    let mut schemas = Schemas::default();
    schemas.message(&envelope);
    for event in &events {
        schemas.message(&event.message);
    }
    let version = envelope
        .package_name()
        .rsplit('.')
        .next()
        .unwrap_or_default();
    let document = map([
        ("asyncapi", s("3.0.0")),
        ("info", info(version)),
        ("defaultContentType", s(PROTOBUF)),
        ("servers", servers()),
        ("channels", channels(&events)),
        ("operations", operations(&events)),
        ("components", components(&envelope, &events, schemas)),
    ]);
    serde_norway::to_string(&document)
        .expect("a YAML value of string keys, strings, numbers and sequences always serialises")
}

/// One event type: the service that writes it and its payload message.
#[derive(Debug)]
struct EventType {
    source: String,
    message: MessageDescriptor,
}

impl EventType {
    fn full_name(&self) -> &str {
        self.message.full_name()
    }

    fn short_name(&self) -> &str {
        self.message.name()
    }

    /// The channel's id (and the operation's, after `receive.`): unique, as
    /// the subject is.
    fn channel_id(&self) -> String {
        format!("{}.{}", self.source, self.short_name())
    }

    fn channel_ref(&self) -> Value {
        reference(format!("#/channels/{}", self.channel_id()))
    }

    fn tag_ref(&self) -> Value {
        reference(format!("#/components/tags/{}", self.source))
    }

    /// The first paragraph of the message's comment, without the
    /// `Name: ` it starts with (the title says it).
    fn summary(&self) -> String {
        let text = message_comment(&self.message)
            .map(|text| first_paragraph(&text))
            .unwrap_or_default();
        let text = text
            .strip_prefix(&format!("{}: ", self.short_name()))
            .unwrap_or(&text);
        let mut chars = text.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => format!("{}.", title(self.short_name())),
        }
    }
}

/// Every event type, by service, then by full name (both sorted).
fn event_types(pool: &DescriptorPool, envelope: &MessageDescriptor) -> Vec<EventType> {
    sources(pool, envelope)
        .into_iter()
        .flat_map(|source| {
            api::known_types(&source)
                .into_iter()
                .filter_map(|name| pool.get_message_by_name(&name))
                .map(move |message| EventType {
                    source: source.clone(),
                    message,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The services that write events: those with a
/// `backroom/<service>/v1/events.proto` (the file [`api::known_types`]
/// reads), the envelope's own file aside.
fn sources(pool: &DescriptorPool, envelope: &MessageDescriptor) -> BTreeSet<String> {
    let envelope_file = envelope.parent_file();
    pool.files()
        .filter(|file| file.name() != envelope_file.name())
        .filter_map(|file| {
            let source = file
                .name()
                .strip_prefix("backroom/")?
                .strip_suffix("/v1/events.proto")?;
            (!source.contains('/')).then(|| source.to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The parts of the document.

fn info(version: &str) -> Value {
    map([
        ("title", s("Backroom events")),
        ("version", s(version)),
        ("description", s(INFO_DESCRIPTION.trim())),
        (
            "license",
            map([
                ("name", s("Apache-2.0")),
                ("url", s("https://www.apache.org/licenses/LICENSE-2.0")),
            ]),
        ),
    ])
}

const INFO_DESCRIPTION: &str = "
Every domain event the Backroom services (account, inventory, payment)
publish. Generated from the protos (`proto/backroom/<service>/v1/events.proto`
and what they import) by `backroom_shared::events::asyncapi`; do not edit by
hand.

**Envelope.** Every event travels in one envelope, `backroom.events.v1.Event`:
`id` (a UUID), `type` (the payload's full protobuf name), `source` (the
service), `subject` (the resource name it is about), `time`, `sequence`,
`traceparent` and `payload` (a `google.protobuf.Any` of the message named by
`type`). Each service writes its events in the same database transaction as
the change (an outbox) and numbers them 1, 2, 3, ... without gaps in commit
order (`sequence`, per service); one subject's events come in the order of
its changes. Delivery is at least once everywhere: record the event id (or
the sequence) with its effect to apply it exactly once.

**Schemas.** The payload schemas describe the envelope's canonical proto3
JSON form: lowerCamelCase names, 64-bit integers as strings, enums by name,
timestamps as RFC 3339 strings, bytes as base64, the payload expanded with
its `@type`. Fields at their default value are left out, so message
properties are optional; ignore properties you do not know (fields get added
within v1).

**Delivery.**

- **JetStream** (when `BACKROOM_NATS_URL` is set; the channels of this
  document): the process that sequences a service's events publishes each,
  in sequence order, to stream `BACKROOM_<SERVICE>` (subjects
  `backroom.<service>.>`) on subject `backroom.<service>.<Type>`, as the
  protobuf-encoded envelope (`application/x-protobuf`), with headers
  `Nats-Msg-Id` (the event id: JetStream drops a republished copy within its
  duplicate window, `BACKROOM_NATS_DUPLICATE_WINDOW_SECS`),
  `Backroom-Sequence`, `Backroom-Type` and `traceparent`.
- **The feed**: `backroom.events.v1.EventService` on each service's gRPC
  port serves the same envelope: `ListEvents` (after a sequence, by type,
  paged) and `WatchEvents` (replays from a sequence, then follows live), for
  admins and service principals.
- **Webhooks**: endpoints registered with `backroom.events.v1.WebhookService`
  get each event POSTed as the JSON these schemas describe
  (`application/json`), one at a time per endpoint in sequence order, signed
  the Standard Webhooks way: `webhook-id` (the event id), `webhook-timestamp`
  (unix seconds) and `webhook-signature` (`v1,` + base64 of HMAC-SHA256 over
  `<id>.<timestamp>.<body>`, keyed with the endpoint's `whsec_` secret).
";

fn servers() -> Value {
    map([(
        SERVER,
        map([
            ("host", s("nats:4222")),
            ("protocol", s("nats")),
            ("title", s("NATS JetStream")),
            (
                "description",
                s(
                    "The NATS server(s) configured as `BACKROOM_NATS_URL` (comma-separated; \
                   `nats:4222` stands for them). Each service's relay creates or updates its \
                   stream `BACKROOM_<SERVICE>` at start-up.",
                ),
            ),
        ]),
    )])
}

fn channels(events: &[EventType]) -> Value {
    map(events.iter().map(|event| {
        let stream = relay::stream_name(&event.source);
        let description = format!(
            "`{}` events of the {} service, in stream `{stream}` (subjects `{}`).",
            event.full_name(),
            event.source,
            relay::stream_subjects(&event.source),
        );
        let message = reference(format!("#/components/messages/{}", event.full_name()));
        let channel = map([
            (
                "address",
                s(relay::subject(&event.source, event.full_name())),
            ),
            ("title", s(title(event.short_name()))),
            ("description", s(description)),
            (
                "servers",
                Value::Sequence(vec![reference(format!("#/servers/{SERVER}"))]),
            ),
            ("messages", map([(event.short_name(), message)])),
        ]);
        (event.channel_id(), channel)
    }))
}

fn operations(events: &[EventType]) -> Value {
    map(events.iter().map(|event| {
        let message = reference(format!(
            "#/channels/{}/messages/{}",
            event.channel_id(),
            event.short_name()
        ));
        let operation = map([
            ("action", s("receive")),
            ("channel", event.channel_ref()),
            ("title", s(format!("Receive {}", event.short_name()))),
            ("summary", s(event.summary())),
            ("tags", Value::Sequence(vec![event.tag_ref()])),
            ("messages", Value::Sequence(vec![message])),
        ]);
        (format!("receive.{}", event.channel_id()), operation)
    }))
}

fn components(envelope: &MessageDescriptor, events: &[EventType], schemas: Schemas) -> Value {
    let messages: BTreeMap<&str, Value> = events
        .iter()
        .map(|event| (event.full_name(), message(envelope, event)))
        .collect();
    let mut all_schemas = schemas.done;
    all_schemas.insert(HEADERS.to_owned(), headers_schema());
    let tags: BTreeMap<&str, Value> = events
        .iter()
        .map(|event| {
            let mut tag = Mapping::new();
            tag.insert(s("name"), s(&event.source));
            if let Some(text) = file_comment(event.message.parent_file().file_descriptor_proto()) {
                tag.insert(s("description"), s(text));
            }
            (event.source.as_str(), Value::Mapping(tag))
        })
        .collect();
    map([
        ("messages", map(messages)),
        ("schemas", map(all_schemas)),
        ("tags", map(tags)),
    ])
}

/// The message of one event type: the envelope with its payload.
fn message(envelope: &MessageDescriptor, event: &EventType) -> Value {
    let full_name = event.full_name();
    let mut out = Mapping::new();
    out.insert(s("name"), s(event.short_name()));
    out.insert(s("title"), s(title(event.short_name())));
    out.insert(s("summary"), s(event.summary()));
    if let Some(text) = message_comment(&event.message)
        && text.contains("\n\n")
    {
        out.insert(s("description"), s(text));
    }
    out.insert(s("contentType"), s(PROTOBUF));
    out.insert(s("tags"), Value::Sequence(vec![event.tag_ref()]));
    let headers = map([(
        "allOf",
        Value::Sequence(vec![
            schema_ref(HEADERS),
            map([
                ("type", s("object")),
                (
                    "properties",
                    map([("Backroom-Type", map([("const", s(full_name))]))]),
                ),
            ]),
        ]),
    )]);
    out.insert(s("headers"), headers);
    let payload = map([(
        "allOf",
        Value::Sequence(vec![
            schema_ref(envelope.full_name()),
            map([
                ("type", s("object")),
                (
                    "properties",
                    map([
                        ("type", map([("const", s(full_name))])),
                        ("source", map([("const", s(&event.source))])),
                        (
                            "payload",
                            map([(
                                "allOf",
                                Value::Sequence(vec![
                                    schema_ref(full_name),
                                    map([
                                        ("type", s("object")),
                                        (
                                            "properties",
                                            map([(
                                                "@type",
                                                map([("const", s(read::type_url(full_name)))]),
                                            )]),
                                        ),
                                        ("required", Value::Sequence(vec![s("@type")])),
                                    ]),
                                ]),
                            )]),
                        ),
                    ]),
                ),
                (
                    "required",
                    ALWAYS_SET.iter().copied().map(s).collect::<Value>(),
                ),
            ]),
        ]),
    )]);
    out.insert(s("payload"), payload);
    Value::Mapping(out)
}

/// The relay's headers ([`relay::headers`]); header values are strings.
fn headers_schema() -> Value {
    map([
        (
            "description",
            s("The NATS headers the JetStream relay publishes every event with."),
        ),
        ("type", s("object")),
        (
            "properties",
            map([
                (
                    "Nats-Msg-Id",
                    map([
                        (
                            "description",
                            s(
                                "The event id: JetStream drops a second message with the same id \
                               within the stream's duplicate window \
                               (`BACKROOM_NATS_DUPLICATE_WINDOW_SECS`), so a republish after a \
                               crash is not delivered twice.",
                            ),
                        ),
                        ("type", s("string")),
                        ("format", s("uuid")),
                    ]),
                ),
                (
                    "Backroom-Sequence",
                    map([
                        (
                            "description",
                            s("The event's sequence in its service's feed, in decimal."),
                        ),
                        ("type", s("string")),
                        ("pattern", s("^[1-9][0-9]*$")),
                    ]),
                ),
                (
                    "Backroom-Type",
                    map([
                        ("description", s("The payload's full protobuf name.")),
                        ("type", s("string")),
                    ]),
                ),
                (
                    "traceparent",
                    map([
                        (
                            "description",
                            s("W3C trace context of the change; absent when it had none."),
                        ),
                        ("type", s("string")),
                    ]),
                ),
            ]),
        ),
        (
            "required",
            ["Nats-Msg-Id", "Backroom-Sequence", "Backroom-Type"]
                .into_iter()
                .map(s)
                .collect::<Value>(),
        ),
    ])
}

/// `OrderReturnRequested` → `Order return requested`.
fn title(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use chrono::Utc;
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, MapKey, Value as Field};
    use serde_json::Value as Json;
    use uuid::Uuid;

    use super::*;
    use crate::events::{read::StoredEvent, webhooks};
    use prost_reflect::Kind;

    /// The committed copy, at the repository root.
    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.asyncapi.yaml");
    /// Every service that writes events (independent of how [`document`]
    /// finds them).
    const SERVICES: [&str; 3] = ["account", "inventory", "payment"];
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_committed_asyncapi_document_is_fresh() {
        let generated = document();
        if std::env::var("BACKROOM_UPDATE_DOCS").as_deref() == Ok("1") {
            let path = std::path::Path::new(COMMITTED);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).unwrap();
            }
            std::fs::write(path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        if committed != generated {
            let line = committed
                .lines()
                .zip(generated.lines())
                .position(|(old, new)| old != new)
                .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
            panic!(
                "docs/events.asyncapi.yaml is missing or stale (first difference at line {}): \
                 regenerate it with\n\n    BACKROOM_UPDATE_DOCS=1 cargo test -p backroom-shared \
                 --lib asyncapi\n\nand commit the result",
                line + 1
            );
        }
    }

    #[test]
    fn the_document_is_the_same_every_time() {
        assert_eq!(document(), document());
    }

    #[test]
    fn the_document_is_asyncapi_3_and_every_reference_resolves() {
        let doc = parsed();
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["info"]["version"], "v1");
        assert_eq!(doc["defaultContentType"], "application/x-protobuf");
        assert_eq!(doc["servers"]["nats"]["protocol"], "nats");
        let mut pointers = Vec::new();
        references(&doc, &mut pointers);
        assert!(pointers.len() > 100, "only {} references", pointers.len());
        for pointer in &pointers {
            let target = pointer.strip_prefix('#').and_then(|path| doc.pointer(path));
            assert!(
                target.is_some_and(|target| target.is_object()),
                "{pointer} points at nothing"
            );
        }
        for (id, operation) in doc["operations"].as_object().unwrap() {
            assert_eq!(operation["action"], "receive", "{id}");
            // AsyncAPI 3: an operation's messages are its channel's.
            let channel = operation["channel"]["$ref"].as_str().unwrap();
            for message in operation["messages"].as_array().unwrap() {
                let message = message["$ref"].as_str().unwrap();
                assert!(
                    message.starts_with(&format!("{channel}/messages/")),
                    "{id}: {message} is not a message of {channel}"
                );
            }
        }
    }

    #[test]
    fn every_event_type_of_every_service_has_a_channel_at_its_nats_subject() {
        let doc = parsed();
        let channels = doc["channels"].as_object().unwrap();
        let operations = doc["operations"].as_object().unwrap();
        let mut types = 0;
        for source in SERVICES {
            let known = api::known_types(source);
            assert!(!known.is_empty(), "the {source} service has no event types");
            for kind in &known {
                types += 1;
                let address = relay::subject(source, kind);
                let (id, channel) = channels
                    .iter()
                    .find(|(_, channel)| channel["address"] == address.as_str())
                    .unwrap_or_else(|| panic!("no channel at {address} for {kind}"));
                let message = format!("#/components/messages/{kind}");
                assert!(
                    channel["messages"]
                        .as_object()
                        .unwrap()
                        .values()
                        .any(|m| m["$ref"] == message.as_str()),
                    "channel {id} does not carry {kind}"
                );
                let message = &doc["components"]["messages"][kind];
                assert_eq!(message["contentType"], "application/x-protobuf", "{kind}");
                assert_eq!(
                    message["headers"]["allOf"][1]["properties"]["Backroom-Type"]["const"],
                    kind.as_str()
                );
                let channel_ref = format!("#/channels/{id}");
                assert!(
                    operations
                        .values()
                        .any(|operation| operation["action"] == "receive"
                            && operation["channel"]["$ref"] == channel_ref.as_str()),
                    "no receive operation on {id}"
                );
            }
        }
        assert_eq!(channels.len(), types, "channels of types no service writes");
        assert_eq!(operations.len(), types);
        assert_eq!(
            doc["components"]["messages"].as_object().unwrap().len(),
            types
        );
    }

    #[test]
    fn the_schemas_follow_the_proto3_json_mapping_and_carry_the_proto_comments() {
        let doc = parsed();
        let schemas = &doc["components"]["schemas"];
        let event = &schemas["backroom.events.v1.Event"]["properties"];
        assert_eq!(
            event["sequence"]["description"],
            "Per-service, gap-free position in the feed (1, 2, 3, ...)."
        );
        // int64 as a string, Timestamp as date-time, Any with @type.
        assert_eq!(event["sequence"]["type"], "string");
        assert_eq!(event["sequence"]["format"], "int64");
        assert_eq!(event["time"]["type"], "string");
        assert_eq!(event["time"]["format"], "date-time");
        assert_eq!(event["payload"]["required"][0], "@type");
        // lowerCamelCase json names; a message field by reference.
        let money = &schemas["backroom.common.v1.Money"]["properties"];
        assert_eq!(money["amountMinor"]["type"], "string");
        let order = &schemas["backroom.payment.v1.Order"]["properties"];
        assert_eq!(
            order["total"]["allOf"][0]["$ref"],
            "#/components/schemas/backroom.common.v1.Money"
        );
        // repeated as an array, map as an object of values.
        assert_eq!(order["lines"]["type"], "array");
        let intent = &schemas["backroom.payment.v1.PaymentIntent"]["properties"];
        assert_eq!(intent["metadata"]["type"], "object");
        assert_eq!(intent["metadata"]["additionalProperties"]["type"], "string");
        // enums as the names of their values, in declaration order.
        let state = api::descriptors()
            .get_enum_by_name("backroom.payment.v1.OrderState")
            .unwrap();
        let names: Vec<Json> = state.values().map(|v| Json::from(v.name())).collect();
        assert_eq!(schemas["backroom.payment.v1.OrderState"]["type"], "string");
        assert_eq!(
            schemas["backroom.payment.v1.OrderState"]["enum"],
            Json::Array(names)
        );
        // every event type's message comment is its schema's description.
        for source in SERVICES {
            for kind in api::known_types(source) {
                let message = api::descriptors().get_message_by_name(&kind).unwrap();
                assert_eq!(
                    schemas[&kind]["description"].as_str(),
                    message_comment(&message).as_deref(),
                    "{kind}"
                );
            }
        }
    }

    #[test]
    fn the_webhook_body_of_every_event_type_matches_its_payload_schema() {
        let doc = parsed();
        for source in SERVICES {
            for kind in api::known_types(source) {
                let body =
                    webhooks::envelope_json(&stored(&kind, TRACEPARENT).to_proto(source)).unwrap();
                let body: Json = serde_json::from_slice(&body).unwrap();
                let schema = &doc["components"]["messages"][&kind]["payload"];
                if let Err(problem) = check(&doc, &body, schema, "$") {
                    panic!("{kind}: {problem}\nin {body:#}");
                }
            }
        }
    }

    #[test]
    fn the_relays_nats_headers_match_the_header_schema() {
        let doc = parsed();
        for traceparent in [TRACEPARENT, ""] {
            for source in SERVICES {
                for kind in api::known_types(source) {
                    let headers = header_json(&stored(&kind, traceparent));
                    let schema = &doc["components"]["messages"][&kind]["headers"];
                    if let Err(problem) = check(&doc, &headers, schema, "headers") {
                        panic!("{kind}: {problem}\nin {headers:#}");
                    }
                }
            }
        }
        // …and it names nothing the relay does not send.
        let sent: BTreeSet<String> =
            header_json(&stored("backroom.payment.v1.OrderPlaced", TRACEPARENT))
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
        let listed: BTreeSet<String> = doc["components"]["schemas"][HEADERS]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(sent, listed);
    }

    fn parsed() -> Json {
        serde_norway::from_str(&document()).expect("the document is YAML")
    }

    /// Every `$ref` in `value`.
    fn references(value: &Json, out: &mut Vec<String>) {
        match value {
            Json::Object(fields) => {
                for (name, field) in fields {
                    match (name.as_str(), field.as_str()) {
                        ("$ref", Some(pointer)) => out.push(pointer.to_owned()),
                        _ => references(field, out),
                    }
                }
            }
            Json::Array(items) => items.iter().for_each(|item| references(item, out)),
            _ => {}
        }
    }

    /// An outbox row of type `kind` whose payload has every field set.
    fn stored(kind: &str, traceparent: &str) -> StoredEvent {
        let message = api::descriptors().get_message_by_name(kind).unwrap();
        StoredEvent {
            sequence: Some(42),
            id: Uuid::now_v7(),
            kind: kind.to_owned(),
            subject: "orders/0190f0a4-0000-7000-8000-000000000000".to_owned(),
            occurred_at: Utc::now(),
            traceparent: traceparent.to_owned(),
            payload: filled(&message, 0).encode_to_vec(),
        }
    }

    /// The relay's headers of `row` as a JSON object of strings.
    fn header_json(row: &StoredEvent) -> Json {
        relay::headers(row)
            .iter()
            .map(|(name, values)| {
                let value = values.first().map(|v| v.as_str().to_owned());
                (name.to_string(), Json::from(value.unwrap_or_default()))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// `message` with every field set to a value that is not its default,
    /// so proto3 JSON shows all of them (members of a oneof: the last).
    fn filled(message: &MessageDescriptor, depth: usize) -> DynamicMessage {
        let mut out = DynamicMessage::new(message.clone());
        match message.full_name() {
            "google.protobuf.Timestamp" => {
                out.set_field_by_name("seconds", Field::I64(1_767_225_600));
                out.set_field_by_name("nanos", Field::I32(500_000_000));
                return out;
            }
            "google.protobuf.Duration" => {
                out.set_field_by_name("seconds", Field::I64(90));
                return out;
            }
            _ if depth > 6 => return out,
            _ => {}
        }
        for field in message.fields() {
            let value = match field.kind() {
                Kind::Message(entry) if field.is_map() => {
                    let key = map_key(&entry.map_entry_key_field().kind());
                    let value = sample(&entry.map_entry_value_field().kind(), depth);
                    Field::Map(HashMap::from([(key, value)]))
                }
                kind if field.is_list() => Field::List(vec![sample(&kind, depth)]),
                kind => sample(&kind, depth),
            };
            out.set_field(&field, value);
        }
        out
    }

    fn sample(kind: &Kind, depth: usize) -> Field {
        match kind {
            Kind::Double => Field::F64(2.5),
            Kind::Float => Field::F32(2.5),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Field::I32(-7),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Field::I64(-9_007_199_254_740_993),
            Kind::Uint32 | Kind::Fixed32 => Field::U32(u32::MAX),
            Kind::Uint64 | Kind::Fixed64 => Field::U64(u64::MAX),
            Kind::Bool => Field::Bool(true),
            Kind::String => Field::String("sample".to_owned()),
            Kind::Bytes => Field::Bytes(prost::bytes::Bytes::from_static(b"\x00\xfe\xff")),
            Kind::Enum(enumeration) => {
                Field::EnumNumber(enumeration.values().last().map_or(0, |v| v.number()))
            }
            Kind::Message(message) => Field::Message(filled(message, depth + 1)),
        }
    }

    fn map_key(kind: &Kind) -> MapKey {
        match kind {
            Kind::Bool => MapKey::Bool(true),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(-7),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(-7),
            Kind::Uint32 | Kind::Fixed32 => MapKey::U32(7),
            Kind::Uint64 | Kind::Fixed64 => MapKey::U64(7),
            _ => MapKey::String("key".to_owned()),
        }
    }

    /// Checks `value` against `schema`, the part of JSON Schema the document
    /// uses (no `pattern`): types, `const`, `enum`, formats, base64,
    /// `required`, and no property that no schema names unless
    /// `additionalProperties` allows it (stricter than JSON Schema, so a
    /// misnamed property fails).
    fn check(doc: &Json, value: &Json, schema: &Json, at: &str) -> Result<(), String> {
        shape(doc, value, schema, at)?;
        let mut parts = Parts::default();
        parts.gather(doc, schema);
        match value {
            Json::Object(fields) => {
                for name in &parts.required {
                    if !fields.contains_key(name) {
                        return Err(format!("{at}.{name} is required"));
                    }
                }
                for (name, field) in fields {
                    let path = format!("{at}.{name}");
                    match parts.properties.get(name) {
                        Some(schemas) => {
                            for schema in schemas {
                                check(doc, field, schema, &path)?;
                            }
                        }
                        None if parts.additional.is_empty() => {
                            return Err(format!("{path} is in no schema"));
                        }
                        None => {
                            for schema in parts.additional.iter().filter(|s| s.is_object()) {
                                check(doc, field, schema, &path)?;
                            }
                        }
                    }
                }
            }
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    for schema in &parts.items {
                        check(doc, item, schema, &format!("{at}[{i}]"))?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// What a schema and its `allOf` say about an object's members or an
    /// array's items.
    #[derive(Default)]
    struct Parts<'a> {
        properties: BTreeMap<String, Vec<&'a Json>>,
        additional: Vec<&'a Json>,
        required: BTreeSet<String>,
        items: Vec<&'a Json>,
    }

    impl<'a> Parts<'a> {
        fn gather(&mut self, doc: &'a Json, schema: &'a Json) {
            let schema = resolve(doc, schema);
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                self.properties
                    .entry(name.clone())
                    .or_default()
                    .push(property);
            }
            match &schema["additionalProperties"] {
                Json::Null | Json::Bool(false) => {}
                other => self.additional.push(other),
            }
            for name in schema["required"].as_array().into_iter().flatten() {
                self.required.insert(name.as_str().unwrap().to_owned());
            }
            if !schema["items"].is_null() {
                self.items.push(&schema["items"]);
            }
            for branch in schema["allOf"].as_array().into_iter().flatten() {
                self.gather(doc, branch);
            }
        }
    }

    fn resolve<'a>(doc: &'a Json, schema: &'a Json) -> &'a Json {
        match schema["$ref"].as_str() {
            Some(pointer) => resolve(doc, doc.pointer(&pointer[1..]).unwrap()),
            None => schema,
        }
    }

    /// `value`'s type, `const`, `enum` and format against `schema` and its
    /// `allOf` branches (`anyOf`: one of them).
    fn shape(doc: &Json, value: &Json, schema: &Json, at: &str) -> Result<(), String> {
        let schema = resolve(doc, schema);
        let fail = |what: String| Err(format!("{at}: {value} {what}"));
        if let Some(kind) = schema["type"].as_str() {
            let fits = match kind {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "object" => value.is_object(),
                "array" => value.is_array(),
                "null" => value.is_null(),
                other => return fail(format!("has a schema of unknown type {other}")),
            };
            if !fits {
                return fail(format!("is not of type {kind}"));
            }
        }
        if let Some(expected) = schema.get("const")
            && value != expected
        {
            return fail(format!("is not {expected}"));
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            return fail("is not one of the enum's values".to_owned());
        }
        if let Some(format) = schema["format"].as_str() {
            let fits = match (format, value) {
                ("date-time", Json::String(text)) => {
                    chrono::DateTime::parse_from_rfc3339(text).is_ok()
                }
                ("int64", Json::String(text)) => text.parse::<i64>().is_ok(),
                ("uint64", Json::String(text)) => text.parse::<u64>().is_ok(),
                ("uuid", Json::String(text)) => Uuid::parse_str(text).is_ok(),
                ("int32", number) => number.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                (other, _) => return fail(format!("has a schema of unknown format {other}")),
            };
            if !fits {
                return fail(format!("is not in format {format}"));
            }
        }
        if let (Some(minimum), Some(number)) = (schema["minimum"].as_f64(), value.as_f64())
            && number < minimum
        {
            return fail(format!("is below {minimum}"));
        }
        if let (Some(maximum), Some(number)) = (schema["maximum"].as_f64(), value.as_f64())
            && number > maximum
        {
            return fail(format!("is above {maximum}"));
        }
        if schema["contentEncoding"] == "base64"
            && value
                .as_str()
                .is_none_or(|text| STANDARD.decode(text).is_err())
        {
            return fail("is not base64".to_owned());
        }
        for branch in schema["allOf"].as_array().into_iter().flatten() {
            shape(doc, value, branch, at)?;
        }
        if let Some(options) = schema["anyOf"].as_array()
            && !options
                .iter()
                .any(|option| shape(doc, value, option, at).is_ok())
        {
            return fail("fits none of anyOf".to_owned());
        }
        Ok(())
    }
}
